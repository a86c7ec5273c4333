"""Ultralytics classification weights (yolo*-cls.pt) as vqtool's ``predict`` runs them.

Apart from :mod:`vqtool.detection.weights` so that recognising weights (``tasks.task_of``) never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vqtool.detection.weights import load_yolo
from vqtool.errors import VQError


@dataclass
class YoloClassifier:
    """An Ultralytics classification checkpoint as vqtool's predict runs it."""

    module: torch.nn.Module  # from a normalised float batch to logits
    classes: list[str]
    imgsz: int
    flips: bool  # whether its training mirrored images (Ultralytics' fliplr)

    # What vqtool's predict reads of a classifier (model, classes, preprocess, meta).
    @property
    def model(self) -> torch.nn.Module:
        return self.module

    @property
    def preprocess(self):
        from vqtool.data.pipeline import Preprocess

        # Ultralytics' classify_transforms: shorter side to imgsz, centre crop, [0, 1] pixels (mean 0, std 1).
        return Preprocess(size=self.imgsz, channels=3, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    @property
    def meta(self) -> dict:
        return {"architecture": "ultralytics", "dataset": {"source": "Ultralytics", "flips": self.flips}}


class YoloLogits(torch.nn.Module):
    """Ultralytics' classification model gives (probabilities, logits) in eval mode; vqtool wants the logits."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.model(x)
        return output[1] if isinstance(output, (tuple, list)) else output


def load_yolo_classifier(spec: str) -> YoloClassifier:
    """Ultralytics classification weights (yolo*-cls.pt); VQError pointing at ``detect`` for a detector."""
    if Path(spec).suffix.lower() == ".onnx":
        raise VQError(f"{spec}: YOLO weights that are not a .pt checkpoint; give predict a yolo*-cls.pt, or a "
                      f"classifier exported by vqtool export (detectors: use `vqtool detect`)", usage=True)
    model, path = load_yolo(spec, exported_task="classify")
    if model.task == "detect":
        raise VQError(f"{path}: a YOLO detector, not a classifier; find objects with `vqtool detect`", usage=True)
    if model.task != "classify":
        raise VQError(f"{path}: a YOLO {model.task} model; vqtool predict takes classifiers", usage=True)
    args = getattr(model.model, "args", None) or {}
    imgsz = args.get("imgsz", 224) if isinstance(args, dict) else getattr(args, "imgsz", 224)
    fliplr = args.get("fliplr", 0.5) if isinstance(args, dict) else getattr(args, "fliplr", 0.5)
    network = model.model.float().eval()
    return YoloClassifier(YoloLogits(network), [model.names[i] for i in sorted(model.names)],
                          int(imgsz if isinstance(imgsz, int) else imgsz[0]), bool(fliplr))
