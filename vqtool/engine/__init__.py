"""Training, evaluation, metrics, checkpoints and run folders."""
