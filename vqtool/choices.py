"""Option values shared by the commands and the library (no heavy imports: `--help` reads them)."""

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "step", "cosine", "plateau", "onecycle")
AUGMENT_POLICIES = ("none", "basic", "strong", "trivial", "randaugment", "autoaugment")
AMP_MODES = ("auto", "off", "bf16", "fp16")
INFERENCE_AMP_MODES = ("auto", "off", "bf16")  # eval, confusion, predict
DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_DEVICE = DEVICES[0]  # auto: a GPU when there is one, else the CPU (every --device's default)
DEFAULT_AMP = AMP_MODES[0]  # auto (every --amp's default, training and inference)
SPLITS = ("train", "val", "test")
