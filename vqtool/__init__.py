"""vqtool: train, fine-tune, inspect, evaluate, detect and export vision models from the shell."""

__version__ = "0.1.0"
