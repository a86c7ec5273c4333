"""What a training loop optimises and measures, per kind of label: :class:`SingleLabel` (softmax cross-entropy,
top-1 accuracy) here; multi-label classification brings its own (``vqtool.multilabel.objective``).

The loop (:mod:`~vqtool.classification.training.loop`) and the training step
(:mod:`~vqtool.classification.training.steps`) ask the objective for the loss, the batch
mixer, the training accuracy and the validation record, and which val metric
picks the best epoch; everything else (optimizer, schedule, EMA, accumulation,
clipping, DDP, commits) is the same for every objective.
"""

from __future__ import annotations

import torch
from torch import nn

from vqtool.classification.config import TrainConfig
from vqtool.classification.inference.logits import logits_with
from vqtool.compute import distributed
from vqtool.data import Split


class SingleLabel:
    """One class per image: cross-entropy (with --class-weights and --label-smoothing), mixup/CutMix on one-hot
    targets, accuracy against the dominant label, the best epoch by val accuracy (balanced when the run
    balances its classes)."""

    task = "classification"

    def load(self, spec: str, data):
        """The dataset ``spec`` names (through the dataset registry)."""
        from vqtool.data import load_dataset

        return load_dataset(spec, data)

    def record(self) -> dict:
        """What args.json keeps besides the training options, for --resume to rebuild this objective."""
        return {}

    finish = None  # the end of a run: classification.train.finish (another objective brings its own)

    def loss(self, config: TrainConfig, train: Split, classes: list[str], device) -> tuple[nn.Module, object]:
        """(the loss, the class weights it uses or None)."""
        from vqtool.classification.training.imbalance import class_weights

        weights = class_weights(config.class_weights, train.labels, classes)
        # mixed targets carry the label smoothing themselves (timm's Mixup smooths them)
        return nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device),
                                   label_smoothing=0.0 if config.mixes else config.label_smoothing), weights

    def mixer(self, config: TrainConfig, classes: list[str]):
        from vqtool.classification.training.mixing import BatchMixer

        return BatchMixer(config, len(classes)) if config.mixes else None

    def scored(self, targets: torch.Tensor) -> torch.Tensor:
        """What training accuracy is measured against: each (possibly mixed) target's dominant label."""
        from vqtool.classification.training.mixing import dominant_label

        return dominant_label(targets)

    def correct(self, logits: torch.Tensor, scored: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(right answers, answers) of a batch."""
        return (logits.argmax(1) == scored).sum().double(), len(scored)

    def validate(self, model, val: Split, inputs, batch_size: int) -> dict:
        loss, top1, balanced = validate(model, val, inputs, batch_size)
        return {"val_loss": loss, "val_top1": top1, "val_balanced_top1": balanced}

    def selection(self, config: TrainConfig) -> str:
        return selection_metric(config)


def selection_metric(config: TrainConfig) -> str:
    """The val metric the best epoch (and early stopping) goes by: the class-balanced accuracy when the run
    weights or balances its classes (it asked for every class to count alike), else the accuracy."""
    return "val_balanced_top1" if config.balances_classes else "val_top1"


def validate(model: nn.Module, val: Split, inputs, batch_size: int) -> tuple[float, float, float]:
    """(loss, top-1 accuracy, class-balanced accuracy: the mean of the recalls of the classes val has) over the
    whole val split; with several ranks each scores a share, then sums."""
    classes = int(val.labels.max()) + 1 if len(val) else 1  # of the whole split: every rank sums as many counts
    if distributed.is_distributed():
        val = val.subset(torch.arange(distributed.rank(), len(val), distributed.world_size()))
    sums = torch.zeros(3 + 2 * classes, dtype=torch.float64)  # loss sum, correct, seen; per class: seen, correct
    if len(val):
        logits = logits_with(model, val, inputs.eval, batch_size)
        hits = logits.argmax(1) == val.labels
        sums[:3] = torch.tensor([nn.functional.cross_entropy(logits, val.labels, reduction="sum").item(),
                                 hits.sum().item(), len(val)], dtype=torch.float64)
        sums[3:] = torch.cat([torch.bincount(val.labels, minlength=classes),
                              torch.bincount(val.labels[hits], minlength=classes)]).double()
    totals = distributed.total(sums.to(inputs.device)).cpu()
    loss_sum, correct, count = totals[:3].tolist()
    seen, recalled = totals[3:3 + classes], totals[3 + classes:]
    return loss_sum / count, correct / count, (recalled[seen > 0] / seen[seen > 0]).mean().item()


SINGLE_LABEL = SingleLabel()
