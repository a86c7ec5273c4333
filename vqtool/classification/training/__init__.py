"""The train and finetune jobs: the loop, one step, schedules, recipes, imbalance, the frozen-backbone feature cache."""
