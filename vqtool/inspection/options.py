"""What `vqtool inspect` looks at and with which backbone; no torch, so the command takes its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass

from vqtool.errors import VQError
from vqtool.multilabel.config import LABELS_FROM

DEFAULT_MODEL = "timm/tf_efficientnet_lite0"
TASKS = ("classification", "multilabel")  # whose labels the data holds (a data.yaml alone: its images, no labels)


@dataclass(frozen=True)
class InspectOptions:
    model: str = DEFAULT_MODEL
    weights: str | None = None
    imgsz: int | None = None
    near_threshold: float = 0.90  # cosine similarity of two embeddings from which they are near copies
    neighbours: int = 10  # nearest others looked at per image
    labels: bool = True  # look for label errors
    device: str = "auto"
    task: str | None = None  # multilabel: the data read as `train --task multilabel` reads it
    labels_from: str | None = None  # boxes: a YOLO data.yaml's image-level labels (multi-label)

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel" or self.labels_from is not None

    def check(self) -> None:
        if not 0 < self.near_threshold <= 1:
            raise VQError(f"--near-threshold must be in (0, 1], got {self.near_threshold}", usage=True)
        if self.task not in (None, *TASKS):
            raise VQError(f"--task {self.task!r}: inspect reads the labels of {' or '.join(TASKS)} data", usage=True)
        if self.labels_from not in (None, *LABELS_FROM):
            raise VQError(f"--labels-from {self.labels_from!r}: choose from {', '.join(LABELS_FROM)}", usage=True)
        if self.labels_from and self.task == "classification":
            raise VQError("--labels-from boxes makes multi-label data; drop --task classification", usage=True)
