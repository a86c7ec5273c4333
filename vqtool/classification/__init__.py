"""Single-label classification, the task's packages from the bottom up:

- ``recipes``: named bundles of training options, and option files (``--config``) read without torch;
- ``config``: what shapes a training run (TrainConfig) and the optimizer and LR schedule made from it;
- ``checkpoints``: the files a classifier is kept in, checkpoints and exports, and where they are, read without torch;
- ``inference``: running a classifier of any runtime over images: logits, eval, confusion, predict;
- ``export``: checkpoints to ONNX, TorchScript and OpenVINO (int8 too), verified; ``vqtool benchmark``;
- ``training``: the train and finetune jobs, their loop and the frozen-backbone feature cache;
- ``task``: the task's entry points, as :mod:`vqtool.tasks` calls them.

Each package imports only the ones above it in this list (an import-linter contract in pyproject.toml).
"""
