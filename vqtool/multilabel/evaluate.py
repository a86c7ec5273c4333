"""Evaluating a multi-label model (checkpoint or export) on held-out data: `eval` and `confusion`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqtool.classification.inference.classifier import Classifier
from vqtool.classification.inference.evaluate import dataset_for as classification_dataset_for, load_classifier
from vqtool.classification.inference.logits import logits_of
from vqtool.compute.device import resolve_device
from vqtool.data import DataOptions, Dataset, Split
from vqtool.data.pipeline import decode_split
from vqtool.errors import VQError, first_line
from vqtool.multilabel.data import load_multilabel
from vqtool.multilabel.metrics import DEFAULT_THRESHOLD, decisions, multilabel_report
from vqtool.plots import png_figure
from vqtool.reporter import SILENT, Reporter


@dataclass
class MultilabelEvaluation:
    classifier: Classifier
    dataset: Dataset
    split_name: str
    split: Split  # decoded; labels N × L in the model's label order
    probabilities: np.ndarray
    thresholds: list[float]

    @property
    def targets(self) -> np.ndarray:
        return self.split.labels.numpy()

    @property
    def predicted(self) -> np.ndarray:
        return decisions(self.probabilities, self.thresholds)

    @property
    def report(self) -> dict:
        return {"task": "multilabel", "dataset": self.dataset.name, "split": self.split_name,
                **multilabel_report(self.probabilities, self.targets, self.thresholds, self.classifier.classes)}


def model_thresholds(classifier: Classifier, override: float | None = None) -> list[float]:
    """The per-label thresholds the model records (chosen on val), or ``override`` for every label."""
    labels = len(classifier.classes)
    if override is not None:
        return [override] * labels
    recorded = classifier.meta.get("thresholds")
    if isinstance(recorded, list) and len(recorded) == labels:
        return [float(t) for t in recorded]
    return [DEFAULT_THRESHOLD] * labels


def evaluate_multilabel(path: str, dataset_spec: str | None, data: DataOptions, *, split: str | None = None,
                        device: str = "auto", batch_size: int | None = None, reporter: Reporter = SILENT,
                        amp: str = "auto", threshold: float | None = None) -> MultilabelEvaluation:
    """Run a multi-label model over a dataset split (default: its own held-out data)."""
    classifier = load_classifier(path)
    dataset = dataset_for(classifier, dataset_spec, data)
    split_name = split or next((name for name in ("test", "val", "train") if getattr(dataset, name) is not None))
    if split is None and split_name == "train":
        reporter.warn(f"{dataset.name} has no val or test split: evaluating its training images")
    chosen = aligned(dataset, dataset.split(split_name), classifier.classes)
    prepared = decode_split(chosen, classifier.preprocess, strict=data.strict, reporter=reporter,
                            workers=data.workers, store=data.cache_store, name=split_name)
    if isinstance(classifier.model, torch.nn.Module):
        classifier.model.to(resolve_device(device))
    logits = logits_of(classifier.model, prepared, classifier.preprocess, resolve_device(device), batch_size, amp=amp)
    return MultilabelEvaluation(classifier, dataset, split_name, prepared, torch.sigmoid(logits).numpy(),
                                model_thresholds(classifier, threshold))


def dataset_for(classifier: Classifier, spec: str | None, data: DataOptions) -> Dataset:
    """The dataset named on the command line (whole unless it has its own splits), else the model's own, read as
    multi-label data (its recorded ``labels_from`` too)."""
    return classification_dataset_for(classifier, spec, data, load=lambda target, options, recorded: load_multilabel(
        target, options, recorded.get("labels_from")))


def aligned(dataset: Dataset, split: Split, classes: list[str]) -> Split:
    """The split's label columns in the model's label order (labels the data lacks are all negative)."""
    if dataset.classes == classes:
        return split
    unknown = sorted(set(dataset.classes) - set(classes))
    if unknown:
        raise VQError(f"labels not known to the model: {', '.join(unknown)} (model labels: {', '.join(classes)})",
                      usage=True)
    targets = torch.zeros(len(split), len(classes))
    for column, name in enumerate(dataset.classes):
        targets[:, classes.index(name)] = split.labels[:, column]
    return Split(labels=targets, pixels=split.pixels, files=split.files, skipped=split.skipped)


def held_out_split(checkpoint, preprocess, dataset_spec: str | None):
    """Real images to verify an export with (see :func:`vqtool.classification.export.verify.held_out_split`)."""
    classifier = Classifier(checkpoint.model, checkpoint.classes, preprocess, checkpoint.meta)
    try:
        dataset = dataset_for(classifier, dataset_spec, DataOptions())
    except VQError as error:
        if dataset_spec:
            raise
        return first_line(error)
    name = next(name for name in ("test", "val", "train") if getattr(dataset, name) is not None)
    return name, aligned(dataset, dataset.split(name), classifier.classes)


# --- confusion ----------------------------------------------------------------------------------------


def confusion_report(evaluation: MultilabelEvaluation, *, top: int, normalize: bool) -> dict:
    """``matrix[i][j]``: images where label i is true and label j predicted (the diagonal: hits), rows as
    fractions of each label's images with ``normalize``; ``cooccurrence``: images where both are true; the
    labels most often missed and most often predicted falsely."""
    truth, predicted = evaluation.targets >= 0.5, evaluation.predicted
    classes = evaluation.classifier.classes
    counts = truth.T.astype(np.int64) @ predicted.astype(np.int64)
    matrix = counts / np.maximum(truth.sum(0), 1)[:, None] if normalize else counts
    missed = (truth & ~predicted).sum(0)
    false = (~truth & predicted).sum(0)
    return {"task": "multilabel", "dataset": evaluation.dataset.name, "split": evaluation.split_name,
            "n": int(len(truth)), "classes": classes, "normalized": normalize,
            "matrix": [[round(float(v), 4) if normalize else int(v) for v in row] for row in matrix],
            "cooccurrence": (truth.T.astype(np.int64) @ truth.astype(np.int64)).tolist(),
            "most_missed": _ranked(classes, missed, truth.sum(0), top),
            "most_false": _ranked(classes, false, (~truth).sum(0), top)}


def _ranked(classes: list[str], errors: np.ndarray, out_of: np.ndarray, top: int) -> list[dict]:
    order = np.argsort(-errors, kind="stable")[:top]
    return [{"label": classes[i], "count": int(errors[i]), "of": int(out_of[i])} for i in order if errors[i] > 0]


def plot_mistakes(evaluation: MultilabelEvaluation, path: Path, limit: int = 25, *, replace: bool = False) -> int:
    """A grid of the images with the most wrong label decisions (missed and false), most first; how many."""
    truth, predicted = evaluation.targets >= 0.5, evaluation.predicted
    wrong = (truth != predicted).sum(1)
    order = [int(i) for i in np.argsort(-wrong, kind="stable")[:limit] if wrong[i] > 0]
    columns = max(1, min(5, len(order)))
    rows = max(1, (len(order) + columns - 1) // columns)
    classes = evaluation.classifier.classes
    with png_figure(path, replace=replace, nrows=rows, ncols=columns, figsize=(2.6 * columns, 2.9 * rows),
                    squeeze=False) as (_, axes):
        for axis in axes.flat:
            axis.axis("off")
        if not order:
            axes.flat[0].text(0.5, 0.5, f"no mistakes\n(all {len(truth)} images right)", ha="center", va="center")
        for axis, index in zip(axes.flat, order):
            image = evaluation.split.pixels[index].permute(1, 2, 0).numpy()
            grey = image.shape[2] == 1
            axis.imshow(image[:, :, 0] if grey else image, cmap="gray" if grey else None)
            missed = [classes[j] for j in np.flatnonzero(truth[index] & ~predicted[index])]
            false = [classes[j] for j in np.flatnonzero(~truth[index] & predicted[index])]
            axis.set_title(f"missed: {', '.join(missed) or '-'}\nfalse: {', '.join(false) or '-'}", fontsize=7)
    return len(order)
