"""What shapes a classifier's training run, and the optimizer and LR schedule made from it.

TrainConfig, FinetuneOptions, PredictOptions and BenchmarkOptions import no torch, so commands check options and
take their defaults from them before paying for it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from vqtool.choices import AMP_MODES, AUGMENT_POLICIES, OPTIMIZERS, SCHEDULERS
from vqtool.errors import VQError
from vqtool.exporting import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_DROP
from vqtool.models.options import HEADS, FreezeSpec

AUGMENTED_VIEWS = 4  # cached views per image when training augments and --cache-views is not given


@dataclass
class TrainConfig:
    """Everything that shapes a training run; stored in args.json so --resume can rebuild it."""

    model: str = "smallcnn"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: str = "adam"
    scheduler: str = "onecycle"
    weight_decay: float = 0.0
    momentum: float = 0.9
    label_smoothing: float = 0.0
    augment: str = "none"
    early_stop: int = 0
    seed: int = 0
    device: str = "auto"
    imgsz: int | None = None
    # The recipe options (classification/training/recipes.py bundles them); each default leaves the plain loop as it was.
    recipe: str | None = None  # the named bundle the options below started from (recorded, not re-applied)
    warmup_epochs: int = 0  # linear LR warm-up before the scheduler starts
    clip_grad: float = 0.0  # max gradient norm (0: no clipping)
    accumulate: int = 1  # batches per optimizer step
    class_weights: str | None = None  # "auto" (inverse class frequency) or a JSON file of weights
    balanced_sampler: bool = False
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup (0: off)
    cutmix: float = 0.0
    mix_switch_prob: float = 0.5  # with both: the chance a batch uses CutMix
    ema: float = 0.0  # decay of the weights' exponential moving average (0: off)
    augment_magnitude: int | None = None  # of trivial/randaugment/autoaugment (None: the policy's own)
    amp: str = "auto"
    compile: bool = False

    def check(self) -> None:
        for name, value, choices in (("optimizer", self.optimizer, OPTIMIZERS),
                                     ("scheduler", self.scheduler, SCHEDULERS),
                                     ("augment", self.augment, AUGMENT_POLICIES), ("amp", self.amp, AMP_MODES)):
            if value not in choices:
                raise VQError(f"--{name} {value!r}: choose from {', '.join(choices)}", usage=True)
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.accumulate < 1:
            raise VQError("--epochs, --batch-size, --lr and --accumulate must be positive", usage=True)
        if not 0 <= self.label_smoothing < 1:
            raise VQError("--label-smoothing must be in [0, 1)", usage=True)
        if not 0 <= self.warmup_epochs < self.epochs:
            raise VQError(f"--warmup-epochs {self.warmup_epochs}: must be fewer than --epochs {self.epochs}",
                          usage=True)
        if not 0 <= self.ema < 1:
            raise VQError("--ema must be a decay in [0, 1), e.g. 0.9998", usage=True)
        if self.augment_magnitude is not None and self.augment not in ("trivial", "randaugment"):
            raise VQError(f"--augment-magnitude applies to --augment trivial or randaugment, not {self.augment}",
                          usage=True)
        if min(self.mixup, self.cutmix, self.clip_grad) < 0 or not 0 <= self.mix_switch_prob <= 1:
            raise VQError("--mixup, --cutmix and --clip-grad must be >= 0, --mix-switch-prob in [0, 1]", usage=True)

    @property
    def mixes(self) -> bool:
        """Batches are mixed (mixup or CutMix): targets are soft and train accuracy is against the dominant label."""
        return self.mixup > 0 or self.cutmix > 0

    @property
    def balances_classes(self) -> bool:
        """The run weights or balances its classes (--class-weights, --balanced-sampler): every class counts alike,
        in the loss or the sampling, and in choosing the best epoch."""
        return bool(self.class_weights or self.balanced_sampler)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def make_optimizer(groups, config: TrainConfig):
    import torch

    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer(groups, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int, epochs: int | None = None):
    """(scheduler, steps per optimizer step?) over ``epochs`` (default all of the run's); onecycle and cosine move
    every optimizer step, the others every epoch. :class:`~vqtool.classification.training.schedule.Schedule` wraps it."""
    import torch

    epochs = epochs or config.epochs
    total = epochs * steps_per_epoch
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1), False
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total)), True
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=2), False
    if config.scheduler == "onecycle":
        max_lr = [group.get("max_lr", group["lr"]) for group in optimizer.param_groups]  # a resumed cycle's peak
        # A cycle of one step would take it at its final LR (peak / 25e4), and learn nothing: a cycle is at
        # least two steps long, so a single step trains near the peak.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(2, total)), True
    return None, False


# `finetune`'s own defaults: a pretrained model, and a few hundred images are enough steps for the head.
FINETUNE_DEFAULTS = TrainConfig(model="resnet18", epochs=5, batch_size=32, lr=3e-3)


@dataclass
class FinetuneOptions:
    """What `finetune` adds to the training options; stored in args.json for --resume."""

    weights: str | None = None  # None: the architecture's default pretrained weights
    freeze: str = "backbone"
    head: str = "linear"
    backbone_lr: float | None = None  # None: lr / 10
    unfreeze_at: int = 0  # epoch at which --unfreeze stages start training (0: never)
    unfreeze: int = 1
    cache: bool = True
    cache_views: int | None = None
    allow_partial_weights: bool = False  # a weights file that fills less than half of the backbone

    def check(self, config: TrainConfig) -> FreezeSpec:
        spec = FreezeSpec.parse(self.freeze)
        if self.head not in HEADS:
            raise VQError(f"--head {self.head}: choose from {', '.join(HEADS)}", usage=True)
        if self.unfreeze_at and not 1 < self.unfreeze_at <= config.epochs:
            raise VQError(f"--unfreeze-at {self.unfreeze_at}: must be an epoch after the first, "
                          f"up to --epochs {config.epochs}", usage=True)
        if self.unfreeze_at and spec.mode == "none":
            raise VQError("--unfreeze-at needs something frozen first (--freeze backbone or N)", usage=True)
        return spec

    def backbone_learning_rate(self, config: TrainConfig) -> float:
        return self.backbone_lr if self.backbone_lr is not None else config.lr / 10

    def uses_cache(self, spec: FreezeSpec) -> bool:
        """The cache serves runs whose backbone stays frozen throughout."""
        return self.cache and spec.mode == "backbone" and not self.unfreeze_at

    def views(self, config: TrainConfig) -> int:
        if self.cache_views is not None:
            return self.cache_views
        return 1 if config.augment == "none" else AUGMENTED_VIEWS

    @classmethod
    def from_dict(cls, data: dict) -> "FinetuneOptions":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class PredictOptions:
    top_k: int = 5
    batch_size: int = 32
    device: str = "auto"
    tta: bool = False  # average the softmax over the image and its horizontal flip
    vid_stride: int = 1
    workers: int | None = None  # decoding threads
    sort_into: str | None = None  # copy each image into sort_into/<class>/ (vqtool.classification.inference.sorting)
    min_confidence: float | None = None
    link: bool = False
    cam_dir: str | None = None  # Grad-CAM figures (vqtool.classification.inference.cam)
    cam_layer: str | None = None
    amp: str = "auto"  # compute.precision.inference_autocast: fp32 on CPUs unless bf16
    threshold: float | None = None  # multi-label models: one threshold for every label instead of their own


# name -> (export format, int8, OpenVINO precision hint, packages it needs); "torch" is the checkpoint itself.
BENCHMARK_FORMATS = {
    "torch": (None, False, None, ()),
    "torchscript": ("torchscript", False, None, ()),
    "onnx": ("onnx", False, None, ("onnxruntime",)),
    "onnx-int8": ("onnx", True, None, ("onnxruntime",)),
    "openvino": ("openvino", False, "f32", ("openvino",)),
    "openvino-bf16": ("openvino", False, "bf16", ("openvino",)),
    "openvino-int8": ("openvino", True, "f32", ("openvino", "nncf")),
}


@dataclass(frozen=True)
class BenchmarkOptions:
    formats: tuple[str, ...] = tuple(BENCHMARK_FORMATS)
    batches: tuple[int, ...] = (1, 32)
    seconds: float = 3.0  # time spent calling the model at each batch size (after one warm-up call)
    max_drop: float = DEFAULT_MAX_DROP  # accuracy points below the first format that still count as fastest
    calibrate: str | None = None
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
