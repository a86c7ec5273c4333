"""The options multi-label training adds; no torch. Their Click options are made from these fields (vqtool.option_fields)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from vqtool.option_fields import check_fields, option

LOSSES = ("bce", "asl")
SELECTIONS = ("map", "last")
LABELS_FROM = ("boxes",)
POS_WEIGHTS = ("auto",)
MAX_POS_WEIGHT = 100.0  # a label seen once in 10,000 images is not weighted 10,000 times
# A multi-label head on a frozen backbone's cached features, where the options are left at finetune's defaults
# (no --recipe): 5 epochs at 3e-3 left it short of a logistic regression on the same features (test mAP 0.764
# against 0.830 on the Fashion-MNIST mosaics of benchmarks/multilabel_baseline.py); these reach it (0.83), and
# epochs on cached features cost little.
# The last epoch, not the best val mAP's: with the one-cycle LR annealed, the last is the converged head, and it
# was the better on test for 3 seeds of 3 (0.831-0.832 against 0.826-0.831 for the best val mAP's epoch).
FROZEN_HEAD_DEFAULTS = {"epochs": 30, "lr": 1e-2, "weight_decay": 3e-4, "select": "last"}


@dataclass
class MultilabelOptions:
    """Stored in args.json for --resume. Typing any of them on train or finetune makes the run multi-label."""

    labels_from: str | None = option(None, "Multi-label: the image-level labels of a YOLO data.yaml, each image "
                                     "labelled with the classes it has boxes of.", choices=LABELS_FROM)
    loss: str = option("bce", "Multi-label loss: bce (binary cross-entropy on each label's logit) or asl (asymmetric "
                       "loss: easy negatives down-weighted, for many labels per image).", choices=LOSSES,
                       show_default=True)
    select: str = option("map", "Multi-label: the epoch the checkpoint keeps: the best val mAP, or the last (the "
                         "default for a head on a frozen backbone's cached features).", choices=SELECTIONS,
                         show_default=True)
    pos_weight: str | None = option(None, "Multi-label: weight each label's positives by its negatives/positives "
                                    "ratio in the training split (at most 100), for rare labels.", choices=POS_WEIGHTS)

    def check(self) -> None:
        check_fields(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MultilabelOptions":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})
