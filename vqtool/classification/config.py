"""What shapes a classifier's training run, and the optimizer and LR schedule made from it.

TrainConfig, FinetuneOptions, PredictOptions and BenchmarkOptions import no torch, so commands check options and
take their defaults from them before paying for it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from vqtool.choices import (AMP_MODES, AUGMENT_POLICIES, DEFAULT_AMP, DEFAULT_DEVICE, INFERENCE_AMP_MODES, OPTIMIZERS,
                            SCHEDULERS)
from vqtool.classification.recipes import RECIPES
from vqtool.errors import VQError
from vqtool.exporting import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_DROP
from vqtool.models.options import HEADS, FreezeSpec
from vqtool.option_fields import check_fields, option

SINGLE_LABEL = ("classification",)  # options of one label per image (a softmax over them): not multi-label's
AUGMENTED_VIEWS = 4  # cached views per image when training augments and --cache-views is not given


@dataclass
class TrainConfig:
    """Everything that shapes a training run; stored in args.json so --resume can rebuild it. Its option fields
    make train's and finetune's Click options (vqtool.option_fields)."""

    model: str = option("smallcnn", {"train": "Architecture (see vqtool models).",
                                     "finetune": "Architecture (a torchvision name or timm/<name>; see vqtool models)."},
                        show_default=True, parameter="model_name", complete="model")
    epochs: int = option(10, min=1, show_default=True)
    batch_size: int = option(64, min=1, show_default=True)
    lr: float = option(2e-3, "Learning rate.", min=0, min_open=True, show_default=True)
    optimizer: str = option("adam", choices=OPTIMIZERS, show_default=True)
    scheduler: str = option("onecycle", choices=SCHEDULERS, show_default=True)
    weight_decay: float = option(0.0, min=0, show_default=True)
    momentum: float = option(0.9, "SGD momentum.", min=0, max=1, show_default=True)
    label_smoothing: float = option(0.0, min=0, max=1, max_open=True, show_default=True, tasks=SINGLE_LABEL)
    augment: str = option("none", "basic: small shifts/zoom/rotation, colour jitter, flips where they keep labels.",
                          choices=AUGMENT_POLICIES, show_default=True)
    early_stop: int = option(0, "Stop after N epochs without val improvement (0: never).", min=0, metavar="N")
    seed: int = 0  # vqtool.data.DataOptions.seed's (--seed), recorded here for the run
    device: str = option(DEFAULT_DEVICE, "Where to train: auto is a GPU when there is one, else the CPU. A list of "
                         "GPU indices (0,1) trains a YOLO detector on several GPUs (Ultralytics' DDP); classifiers "
                         "scale out with torchrun.", metavar="auto|cpu|cuda[:N]|mps|N,N", show_default=True,
                         complete="device")
    imgsz: int | None = option(None, "Input side in pixels (default: the model's or the data's).", min=1)
    # The recipe options (classification/recipes.py bundles them); each default leaves the plain loop as it was.
    recipe: str | None = option(None, "Start from a named bundle of the options below (basic: augmentation, label "
                                "smoothing, warm-up, cosine, AdamW; strong: also TrivialAugment, mixup/CutMix, EMA); "
                                "options given explicitly win.", choices=RECIPES)  # recorded, not re-applied
    warmup_epochs: int = option(0, "Raise the LR linearly from 1% over the first N epochs, then the --scheduler.",
                                min=0, metavar="N", show_default=True)
    clip_grad: float = option(0.0, "Clip the gradients' global norm to NORM (0: no clipping).", min=0,
                              metavar="NORM", show_default=True)
    accumulate: int = option(1, "Gradient accumulation: one optimizer step per N batches (effective batch N x B).",
                             min=1, metavar="N", show_default=True)
    class_weights: str | None = option(None, "Weight the loss by class: auto (inverse frequency) or a JSON file of "
                                       "weights.", metavar="auto|FILE", tasks=SINGLE_LABEL)
    balanced_sampler: bool = option(False, "Draw each epoch's images with classes equally likely.", tasks=SINGLE_LABEL)
    mixup: float = option(0.0, "Mixup of batch images with Beta(ALPHA, ALPHA) weights (0: off; 0.2 is usual).", min=0,
                          metavar="ALPHA", show_default=True)
    cutmix: float = option(0.0, "CutMix with Beta(ALPHA, ALPHA) box areas (0: off; 1.0 is usual).", min=0,
                           metavar="ALPHA", show_default=True)
    mix_switch_prob: float = option(0.5, "With both --mixup and --cutmix: the chance a batch uses CutMix.", min=0,
                                    max=1, show_default=True)
    ema: float = option(0.0, "Validate and save an exponential moving average of the weights (e.g. 0.9998; 0: off).",
                        min=0, max=1, max_open=True, metavar="DECAY", show_default=True)
    augment_magnitude: int | None = option(None, "randaugment: the magnitude bin of 31 (default 9); trivial: the "
                                           "largest bin it samples (default 30).", min=0, max=30, metavar="M")
    amp: str = option(DEFAULT_AMP, "Mixed precision: auto is bf16 on GPUs that have it, else fp16; on CPUs bf16 only "
                      "where the CPU computes it natively (AMX or AVX-512 BF16), else fp32; off: fp32.",
                      choices=AMP_MODES, show_default=True)
    compile: bool = option(False, "torch.compile the model (the first step pays the compilation).")

    def check(self) -> None:
        """The usage errors of these options (each field's range or choices, then how they combine)."""
        check_fields(self)
        if self.warmup_epochs >= self.epochs:
            raise VQError(f"--warmup-epochs {self.warmup_epochs}: must be fewer than --epochs {self.epochs}",
                          usage=True)
        if self.augment_magnitude is not None and self.augment not in ("trivial", "randaugment"):
            raise VQError(f"--augment-magnitude applies to --augment trivial or randaugment, not {self.augment}",
                          usage=True)

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

    weights: str | None = option(None, "DEFAULT (the default), a torchvision enum name (IMAGENET1K_V1), a timm tag "
                                 "(timm/resnet18.a1_in1k), or a local .pth/.pt/.safetensors file; YOLO: a .pt "
                                 "checkpoint.", metavar="SPEC")  # None: the architecture's default pretrained weights
    allow_partial_weights: bool = option(False, "Use a --weights file even when it fills less than half of the "
                                         "backbone (else an error).")
    freeze: str = option("backbone", "What stays frozen: all but the head, nothing, all but the last N stages, or up "
                         "to LAYER.", metavar="backbone|none|N|until:LAYER", show_default=True)
    head: str = option("linear", "The new classifier: one linear layer, or two with ReLU and dropout.", choices=HEADS,
                       show_default=True)
    backbone_lr: float | None = option(None, "LR of the unfrozen backbone layers (default: --lr / 10).", min=0,
                                       min_open=True)
    unfreeze_at: int = option(0, "Staged fine-tuning: unfreeze --unfreeze stages at this epoch (0: never).", min=0,
                              metavar="EPOCH")
    unfreeze: int = option(1, "Stages, counted from the end, that --unfreeze-at unfreezes.", min=1, metavar="N",
                           show_default=True)
    cache: bool = option(True, "With the backbone frozen throughout, compute its features once and train the head "
                         "on them.", show_default=True)
    cache_views: int | None = option(None, "Augmented views cached per training image (default 1, or 4 with "
                                     "--augment).", min=1, metavar="K")

    def check(self, config: TrainConfig) -> FreezeSpec:
        check_fields(self)
        spec = FreezeSpec.parse(self.freeze)
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
    """`vqtool predict`'s options (its Click options are made from these fields)."""

    top_k: int = option(5, "Classes listed per image (at most the model's number of classes).", min=1,
                        show_default=True)
    batch_size: int = option(32, "Images per forward pass.", min=1, show_default=True)
    device: str = option(DEFAULT_DEVICE, "Where to run the model: auto is a GPU when there is one, else the CPU.",
                         metavar="auto|cpu|cuda[:N]|mps", show_default=True, complete="device")
    amp: str = option(DEFAULT_AMP, "Checkpoints: auto is half precision on GPUs and fp32 on CPUs (results do not "
                      "change with the CPU); bf16: bf16 autocast on a CPU too (fast only with AMX or AVX-512 BF16); "
                      "off: fp32. Exports run as exported.", choices=INFERENCE_AMP_MODES,
                      show_default=True)  # compute.precision.inference_autocast
    workers: int | None = option(None, "Image-decoding threads.", min=1)
    vid_stride: int = option(1, "Use every N-th video frame.", min=1, show_default=True)
    tta: bool = option(False, "Average the softmax over each image and its mirror image (refused for models whose "
                       "training data is never mirrored, such as digits).")
    sort_into: str | None = option(None, "Copy each image into SORT_INTO/<predicted class>/ (below --min-confidence: "
                                   "_uncertain/). Originals are never moved or changed; a name already taken gets a "
                                   "numbered name.", folder=True)  # vqtool.classification.inference.sorting
    min_confidence: float | None = option(None, "With --sort-into: images whose top confidence is below this go to "
                                          "_uncertain/.", min=0, max=1)
    threshold: float | None = option(None, "Multi-label models: list the labels whose probability is at least this, "
                                     "instead of each label's own threshold (chosen on val when it trained).", min=0,
                                     max=1)
    link: bool = option(False, "With --sort-into: hard-link (else symlink) instead of copying.")
    cam_dir: str | None = option(None, "Write a Grad-CAM heatmap of the top class for each image here (PNG; torch "
                                 "checkpoints).", folder=True, flag="--cam")  # vqtool.classification.inference.cam
    cam_layer: str | None = option(None, "The module Grad-CAM looks at (default: the last convolutional stage).",
                                   metavar="NAME")

    def check(self) -> None:
        """The options that go with another (the fields' own ranges are Click's, as typed)."""
        if not self.sort_into and (self.min_confidence is not None or self.link):
            raise VQError(f"{'--link' if self.link else '--min-confidence'} goes with --sort-into DIR", usage=True)
        if self.cam_layer and not self.cam_dir:
            raise VQError("--cam-layer goes with --cam DIR", usage=True)


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
    """`vqtool benchmark`'s options (--formats and --batch: comma lists the command splits)."""

    formats: tuple[str, ...] = tuple(BENCHMARK_FORMATS)
    batches: tuple[int, ...] = (1, 32)
    seconds: float = option(3.0, "Time spent measuring each format at each batch size.", min=0,
                            show_default=True)  # at each batch size, after one warm-up call
    max_drop: float = option(DEFAULT_MAX_DROP, "Accuracy points below the first format that the fastest may lose.",
                             min=0, metavar="POINTS", show_default=True)
    calibrate: str | None = option(None, "int8 formats: calibration images (default: the run's own training images).",
                                   metavar="DATASET")
    calibration_images: int = option(DEFAULT_CALIBRATION_IMAGES, min=1, show_default=True)
