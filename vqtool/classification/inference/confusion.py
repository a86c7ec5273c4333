"""The confusion matrix of an evaluation, its heatmap and a grid of misclassified examples."""

from __future__ import annotations

from pathlib import Path

import torch

from vqtool.classification.inference.evaluate import Evaluation
from vqtool.metrics import confusion_document, confusion_matrix
from vqtool.plots import png_figure


def confusion_report(evaluation: Evaluation, *, top: int, normalize: bool) -> dict:
    """The document ``vqtool confusion --json`` prints (rows = true class)."""
    classes = evaluation.classifier.classes
    counts = confusion_matrix(evaluation.logits.argmax(1), evaluation.split.labels, len(classes))
    return {"dataset": evaluation.dataset.name, "split": evaluation.split_name, "n": int(counts.sum()),
            **confusion_document(counts, classes, top=top, normalize=normalize)}


def plot_misclassified(evaluation: Evaluation, path: Path, limit: int = 25, *, replace: bool = False) -> int:
    """A grid of up to ``limit`` misclassified images (most confident mistakes first); returns how many."""
    classes = evaluation.classifier.classes
    probabilities = evaluation.logits.softmax(1)
    confidence, predicted = probabilities.max(1)
    wrong = torch.nonzero(predicted != evaluation.split.labels).flatten()
    wrong = wrong[confidence[wrong].argsort(descending=True)][:limit]
    if len(wrong) == 0:
        _plot_no_mistakes(path, len(evaluation.split.labels))
        return 0
    columns = min(5, len(wrong))
    rows = (len(wrong) + columns - 1) // columns
    with png_figure(path, replace=replace, nrows=rows, ncols=columns, figsize=(2.4 * columns, 2.7 * rows), squeeze=False) as (_, axes):
        for axis in axes.flat:
            axis.axis("off")
        for axis, index in zip(axes.flat, wrong.tolist()):
            image = evaluation.split.pixels[index].permute(1, 2, 0).numpy()
            grey = image.shape[2] == 1
            axis.imshow(image[:, :, 0] if grey else image, cmap="gray" if grey else None)
            true, guess = classes[evaluation.split.labels[index]], classes[predicted[index]]
            axis.set_title(f"true: {true}\npred: {guess} ({confidence[index]:.2f})", fontsize=8)
    return len(wrong)


def _plot_no_mistakes(path: Path, images: int) -> None:
    """The figure --examples asked for when there is nothing to show: it says so (a script may expect the file)."""
    with png_figure(path, figsize=(4.8, 2.4)) as (_, axis):
        axis.axis("off")
        axis.text(0.5, 0.5, f"no misclassified images\n(all {images} classified correctly)", ha="center",
                  va="center", fontsize=13)
