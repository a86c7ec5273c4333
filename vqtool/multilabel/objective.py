"""What multi-label training optimises and measures, for classification's loop
(:mod:`vqtool.classification.training.objective` describes the protocol).

Each label's logit is its own yes/no: binary cross-entropy with logits (with
``--pos-weight auto``, each label's positives weighted by its negatives/positives
ratio), or the asymmetric loss (ASL, Ridnik et al. 2021: easy negatives
down-weighted by a focusing term and a probability margin). Mixup and CutMix mix
the multi-hot rows as they mix the images. Training accuracy is the share of
label decisions (at 0.5) that are right; validation adds the macro mAP, which
picks the best epoch.
"""

from __future__ import annotations

import torch
from torch import nn

from vqtool.classification.config import TrainConfig
from vqtool.data import Split
from vqtool.multilabel.config import MAX_POS_WEIGHT, MultilabelOptions
from vqtool.multilabel.metrics import mean_ap


class AsymmetricLoss(nn.Module):
    """ASL with the paper's defaults (gamma- 4, gamma+ 0, margin 0.05), averaged over images and labels."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        shifted = (p - self.clip).clamp(min=0)  # negatives below the margin cost nothing
        positive = targets * torch.log(p.clamp(min=self.eps)) * (1 - p) ** self.gamma_pos
        negative = (1 - targets) * torch.log((1 - shifted).clamp(min=self.eps)) * shifted ** self.gamma_neg
        return -(positive + negative).mean()


def positive_weights(targets: torch.Tensor) -> torch.Tensor:
    """Per label: negatives / positives in the training split, between 1 and MAX_POS_WEIGHT."""
    positives = targets.sum(0)
    negatives = len(targets) - positives
    return (negatives / positives.clamp(min=1)).clamp(1.0, MAX_POS_WEIGHT)


class MultiLabel:
    task = "multilabel"

    def __init__(self, options: MultilabelOptions):
        self.options = options

    def loss(self, config: TrainConfig, train: Split, classes: list[str], device) -> tuple[nn.Module, object]:
        weights = positive_weights(train.labels) if self.options.pos_weight == "auto" else None
        if self.options.loss == "asl":
            return AsymmetricLoss(), weights  # ASL's focusing replaces positive weighting (check refuses both)
        return nn.BCEWithLogitsLoss(pos_weight=None if weights is None else weights.to(device)), weights

    def mixer(self, config: TrainConfig, classes: list[str]):
        from vqtool.classification.training.mixing import BatchMixer

        return BatchMixer(config, len(classes), multi_label=True) if config.mixes else None

    def scored(self, targets: torch.Tensor) -> torch.Tensor:
        return targets

    def correct(self, logits: torch.Tensor, scored: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(right label decisions at 0.5, label decisions) of a batch (a mixed target counts by its larger share)."""
        return ((logits > 0) == (scored >= 0.5)).sum().double(), scored.numel()

    def validate(self, model, val: Split, inputs, batch_size: int) -> dict:
        """Loss, label accuracy at 0.5 and macro mAP over the whole val split (each process scores all of it)."""
        from vqtool.classification.inference.logits import logits_with

        logits = logits_with(model, val, inputs.eval, batch_size)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, val.labels).item()
        accuracy = ((logits > 0) == (val.labels >= 0.5)).float().mean().item()
        found = mean_ap(torch.sigmoid(logits).numpy(), val.labels.numpy())
        return {"val_loss": loss, "val_top1": accuracy, "val_map": found if found is not None else 0.0}

    def selection(self, config: TrainConfig) -> str:
        """The val mAP, or with --select last the epoch number (each epoch is then better than the last)."""
        return "val_map" if self.options.select == "map" else "epoch"
