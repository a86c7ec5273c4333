"""The options multi-label training adds; no torch. Their Click options are made from these fields."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from vqtool.errors import VQError

LOSSES = ("bce", "asl")
LABELS_FROM = ("boxes",)
POS_WEIGHTS = ("auto",)
MAX_POS_WEIGHT = 100.0  # a label seen once in 10,000 images is not weighted 10,000 times


@dataclass
class MultilabelOptions:
    """Stored in args.json for --resume. Typing any of them on train or finetune makes the run multi-label."""

    labels_from: str | None = field(default=None, metadata={
        "choices": LABELS_FROM, "help": "Multi-label: the image-level labels of a YOLO data.yaml, each image "
                                        "labelled with the classes it has boxes of."})
    loss: str = field(default="bce", metadata={
        "choices": LOSSES, "help": "Multi-label loss: bce (binary cross-entropy on each label's logit) or asl "
                                   "(asymmetric loss: easy negatives down-weighted, for many labels per image)."})
    pos_weight: str | None = field(default=None, metadata={
        "choices": POS_WEIGHTS, "help": "Multi-label: weight each label's positives by its negatives/positives "
                                        "ratio in the training split (at most 100), for rare labels."})

    def check(self) -> None:
        for item in fields(self):
            value, choices = getattr(self, item.name), item.metadata.get("choices")
            if value is not None and choices and value not in choices:
                raise VQError(f"--{item.name.replace('_', '-')} {value!r}: choose from {', '.join(choices)}",
                              usage=True)

    @classmethod
    def from_dict(cls, data: dict) -> "MultilabelOptions":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})
