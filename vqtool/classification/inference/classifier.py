"""What eval, confusion and predict run: a model of any runtime with its classes and preprocessing."""

from __future__ import annotations

from dataclasses import dataclass

from vqtool.data.pipeline import Preprocess


@dataclass
class Classifier:
    """Something that maps a normalised float batch to logits, with what it needs to know."""

    model: object
    classes: list[str]
    preprocess: Preprocess
    meta: dict
