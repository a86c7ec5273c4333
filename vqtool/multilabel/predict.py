"""Streaming multi-label prediction: classification's stream (decoding, batching, --tta) with sigmoid scores;
each record names the labels at or above their thresholds.

A record: ``path``, ``frame`` (video frames only), ``width``, ``height``,
``labels`` (names, most confident first), ``confidences`` (theirs, in that order)
and ``scores`` (every label's probability), rounded to 6 decimals.
"""

from __future__ import annotations

from vqtool.classification.inference.evaluate import load_classifier
from vqtool.classification.inference.predict import predict as stream
from vqtool.classification.inference.records import DECIMALS
from vqtool.errors import VQError
from vqtool.multilabel.evaluate import model_thresholds
from vqtool.reporter import plural

RECORD_COLUMNS = ["path", "frame", "width", "height", "labels"]


def predict_labels(sources, weights: str, options):
    """(the stream of records and Failures, the label names)."""
    for name, given in (("--sort-into", options.sort_into), ("--cam", options.cam_dir)):
        if given:
            raise VQError(f"{name} is for single-label classifiers; a multi-label model's images have several "
                          f"labels", usage=True)
    classifier = load_classifier(weights)
    thresholds = model_thresholds(classifier, options.threshold)
    classes = classifier.classes

    def records(scores, frames) -> list[dict]:
        made = []
        for frame, row in zip(frames, scores.tolist()):
            chosen = sorted((j for j, p in enumerate(row) if p >= thresholds[j]), key=lambda j: -row[j])
            record = {"path": frame.input.path}
            if frame.index is not None:
                record["frame"] = frame.index
            record.update(width=frame.image[1][0], height=frame.image[1][1], labels=[classes[j] for j in chosen],
                          confidences=[round(row[j], DECIMALS) for j in chosen],
                          scores={name: round(p, DECIMALS) for name, p in zip(classes, row)})
            made.append(record)
        return made

    return stream(sources, classifier, options, activation="sigmoid", records=records), classes


def csv_values(record: dict, classes: list[str]) -> list:
    """path, frame, width, height, the labels joined by |, then each label's probability."""
    return [record.get("path"), record.get("frame"), record["width"], record["height"], "|".join(record["labels"]),
            *(record["scores"][name] for name in classes)]


def table_row(record: dict) -> str:
    where = record["path"] + (f" #{record['frame']}" if "frame" in record else "")
    shown = ", ".join(f"{name} {p:.3f}" for name, p in zip(record["labels"], record["confidences"])) or "-"
    return f"{shown:<48}  {where}"


class LabelSummary:
    """predict's last stderr line: images, how many had each label, labels per image, time per image."""

    def __init__(self):
        self.images, self.failed, self.per_label, self.labels = 0, 0, {}, 0

    def add(self, record: dict) -> None:
        self.images += 1
        self.labels += len(record["labels"])
        for name in record["labels"]:
            self.per_label[name] = self.per_label.get(name, 0) + 1

    def lines(self, seconds: float) -> list[str]:
        if not self.images:
            return [f"no images{f', {self.failed} skipped' if self.failed else ''}"]
        counts = ", ".join(f"{name} {count}" for name, count in sorted(self.per_label.items(),
                                                                     key=lambda kv: (-kv[1], kv[0])))
        failed = f", {self.failed} skipped" if self.failed else ""
        return [f"{plural(self.images, 'image')}{failed}: {counts or 'no labels'}; "
                f"{self.labels / self.images:.2f} labels per image; {1000 * seconds / self.images:.1f} ms per image"]
