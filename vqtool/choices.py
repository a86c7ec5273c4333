"""Option values shared by the commands and the library (no heavy imports: `--help` reads them)."""

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "step", "cosine", "plateau", "onecycle")
AUGMENT_POLICIES = ("none", "basic", "strong")
DEVICES = ("auto", "cpu", "cuda", "mps")
SPLITS = ("train", "val", "test")
