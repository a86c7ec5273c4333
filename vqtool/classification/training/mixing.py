"""``--mixup`` and ``--cutmix``: mixed training batches on the device, through timm's ``Mixup``.

Each batch is blended with itself reversed (image i with image n-1-i): mixup
averages whole images with a Beta(alpha, alpha) weight, CutMix pastes a box
whose area follows it; with both, ``--mix-switch-prob`` is the chance a batch
uses CutMix. The targets are the same mixture of the two (smoothed) one-hot
labels, so the loss is the mixture of the two losses. Training accuracy is
measured against each image's dominant label (the larger share).
"""

from __future__ import annotations

import numpy as np
import torch

from vqtool.classification.config import TrainConfig


class BatchMixer:
    """Mixes a normalised float batch and returns its soft targets (N x classes, rows summing to one)."""

    def __init__(self, config: TrainConfig, num_classes: int, multi_label: bool = False):
        """``multi_label``: the labels are multi-hot rows (N x classes), mixed as they are."""
        from timm.data import Mixup

        self.num_classes = num_classes
        self.smoothing = config.label_smoothing
        self.multi_label = multi_label
        self.mixup = Mixup(mixup_alpha=config.mixup, cutmix_alpha=config.cutmix, switch_prob=config.mix_switch_prob,
                           label_smoothing=config.label_smoothing, num_classes=num_classes, multi_label=multi_label)

    def reseed(self, generator: torch.Generator) -> None:
        """timm draws its mixing weights from NumPy's global generator: seeding it from the run's own stream at
        each epoch makes a resumed run mix as the uninterrupted one would."""
        np.random.seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed x, targets). timm pairs images within an even batch; an odd last image keeps its own label."""
        from timm.data.mixup import mixup_target

        even = len(x) - len(x) % 2
        if even == 0:
            return x, mixup_target(labels, self.num_classes, 1.0, self.smoothing, self.multi_label)
        mixed, targets = self.mixup(x[:even], labels[:even])
        if even == len(x):
            return mixed, targets
        rest = mixup_target(labels[even:], self.num_classes, 1.0, self.smoothing, self.multi_label)
        return torch.cat([mixed, x[even:]]), torch.cat([targets, rest])


def dominant_label(targets: torch.Tensor) -> torch.Tensor:
    """The label each (possibly soft) target gives the largest share."""
    return targets.argmax(1) if targets.ndim == 2 else targets
