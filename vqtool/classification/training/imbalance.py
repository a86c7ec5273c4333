"""Class imbalance: loss weights (``--class-weights``), class-balanced epochs (``--balanced-sampler``), and how
imbalanced a training split is.

``auto`` weights are inverse class frequencies normalised so that the average
weight over the training images is one (scikit-learn's "balanced":
N / (K * n_c)), which keeps the loss, and so the LR that suits it, on the
scale of the unweighted loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vqtool.errors import VQError, first_line
from vqtool.files import read_text

STRONG_IMBALANCE = 5.0  # largest / smallest class: from here the summary suggests the options above


def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(labels, minlength=num_classes)


def class_weights(spec: str | None, labels: torch.Tensor, classes: list[str]) -> torch.Tensor | None:
    """The loss weight of each class for ``--class-weights spec`` (None: unweighted)."""
    if spec is None:
        return None
    if spec == "auto":
        counts = class_counts(labels, len(classes)).double().clamp_min(1)
        return (counts.sum() / (len(classes) * counts)).float()
    return _weights_file(Path(spec), classes)


def _weights_file(path: Path, classes: list[str]) -> torch.Tensor:
    """A JSON object {class: weight} naming every class, or a list of weights in class order."""
    try:
        document = json.loads(read_text(path))
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else first_line(error)
        raise VQError(f"--class-weights {path}: not 'auto' or a readable JSON file ({reason})", usage=True) from error
    if isinstance(document, dict):
        missing = [name for name in classes if name not in document]
        unknown = sorted(set(document) - set(classes))
        if missing or unknown:
            raise VQError(f"--class-weights {path}: " + "; ".join(
                part for part in (f"no weight for {', '.join(missing)}" if missing else "",
                                  f"unknown classes {', '.join(unknown)}" if unknown else "") if part), usage=True)
        document = [document[name] for name in classes]
    if not isinstance(document, list) or len(document) != len(classes) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in document) or not any(document):
        raise VQError(f"--class-weights {path}: needs {len(classes)} non-negative numbers (one per class, "
                      f"as a list or an object keyed by class name)", usage=True)
    return torch.tensor(document, dtype=torch.float32)


def balanced_order(labels: torch.Tensor, generator: torch.Generator, count: int) -> torch.Tensor:
    """``count`` indices drawn with replacement so that every class is equally likely."""
    counts = torch.bincount(labels).double()
    per_image = (1.0 / counts)[labels]
    return torch.multinomial(per_image, count, replacement=True, generator=generator)


def imbalance_hint(labels: torch.Tensor, classes: list[str]) -> str | None:
    """What to try when the training classes are strongly imbalanced (None when they are not)."""
    counts = class_counts(labels, len(classes))
    largest, smallest = int(counts.argmax()), int(counts.argmin())
    ratio = counts[largest].item() / max(1, counts[smallest].item())
    if ratio < STRONG_IMBALANCE:
        return None
    return (f"imbalanced classes: {classes[largest]} has {counts[largest].item()} training images, "
            f"{classes[smallest]} {counts[smallest].item()} ({ratio:.0f}x); try --class-weights auto or "
            f"--balanced-sampler")
