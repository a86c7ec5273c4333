"""What `vqtool inspect` looks at and with which backbone; no torch, so the command takes its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass

from vqtool.errors import VQError

DEFAULT_MODEL = "timm/tf_efficientnet_lite0"


@dataclass(frozen=True)
class InspectOptions:
    model: str = DEFAULT_MODEL
    weights: str | None = None
    imgsz: int | None = None
    near_threshold: float = 0.92  # cosine similarity from which two embeddings are near-copy candidates
    neighbours: int = 10  # nearest others looked at per image
    labels: bool = True  # look for label errors
    device: str = "auto"

    def check(self) -> None:
        if not 0 < self.near_threshold <= 1:
            raise VQError(f"--near-threshold must be in (0, 1], got {self.near_threshold}", usage=True)
