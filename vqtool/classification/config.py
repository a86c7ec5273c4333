"""What shapes a classifier's training run, and the optimizer and LR schedule made from it.

TrainConfig imports no torch, so commands can check options before paying for it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from vqtool.choices import AUGMENT_POLICIES, OPTIMIZERS, SCHEDULERS
from vqtool.errors import VQError


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

    def check(self) -> None:
        for name, value, choices in (("optimizer", self.optimizer, OPTIMIZERS),
                                     ("scheduler", self.scheduler, SCHEDULERS),
                                     ("augment", self.augment, AUGMENT_POLICIES)):
            if value not in choices:
                raise VQError(f"--{name} {value!r}: choose from {', '.join(choices)}", usage=True)
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise VQError("--epochs, --batch-size and --lr must be positive", usage=True)
        if not 0 <= self.label_smoothing < 1:
            raise VQError("--label-smoothing must be in [0, 1)", usage=True)

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
    """(scheduler, steps per batch?) over ``epochs`` (default all of the run's); onecycle and cosine move every
    batch, the others every epoch."""
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
