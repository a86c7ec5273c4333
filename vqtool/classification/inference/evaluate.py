"""Evaluating a trained classifier on held-out data: the library side of `eval` and `confusion`."""

from __future__ import annotations

from dataclasses import dataclass
import torch

from vqtool.data import DataOptions, Dataset, Split, load_dataset
from vqtool.classification.inference.classifier import Classifier
from vqtool.data.pipeline import decode_split
from vqtool.compute.device import resolve_device
from vqtool.classification.inference.logits import logits_of
from vqtool.metrics import classification_report
from vqtool.errors import VQError, first_line
from vqtool.reporter import SILENT, Reporter

WHOLE = "all"  # the split name of a dataset evaluated whole


def load_classifier(path: str) -> Classifier:
    """A vqtool checkpoint (run folder, model.safetensors or model.json), or a model exported by vqtool export."""
    from pathlib import Path

    from vqtool.classification.checkpoints.format import load_checkpoint
    from vqtool.classification.checkpoints.export_format import ir_folder
    from vqtool.classification.inference.exported import LOADERS, load_exported

    if Path(path).suffix.lower() in LOADERS or ir_folder(path) is not None:
        return load_exported(path)
    checkpoint = load_checkpoint(path)
    return Classifier(checkpoint.model, checkpoint.classes, checkpoint.preprocess, checkpoint.meta)


@dataclass
class Evaluation:
    classifier: Classifier
    dataset: Dataset
    split_name: str
    split: Split
    logits: torch.Tensor

    def predictions(self, k: int = 5) -> list[dict]:
        """One row per evaluated image (``eval --predictions``; see :mod:`vqtool.classification.inference.records`)."""
        from vqtool.classification.inference.records import evaluation_rows

        return evaluation_rows(self.logits, self.split.labels, self.classifier.classes, self.split.files, k)

    @property
    def report(self) -> dict:
        return {"dataset": self.dataset.name, "split": self.split_name,
                **classification_report(self.logits, self.split.labels, self.classifier.classes)}


def evaluate(path: str, dataset_spec: str | None, data: DataOptions, *, split: str | None = None,
             device: str = "auto", batch_size: int | None = None, reporter: Reporter = SILENT,
             amp: str = "auto") -> Evaluation:
    """Run a checkpoint over a dataset split (default: the checkpoint's own held-out data)."""
    classifier = load_classifier(path)
    dataset, split_name, raw = evaluation_split(classifier, dataset_spec, data, split, reporter)
    prepared = decode_split(raw, classifier.preprocess, strict=data.strict, reporter=reporter, workers=data.workers,
                            store=data.cache_store,
                            name=None if split_name == WHOLE else split_name, classes=classifier.classes)
    if isinstance(classifier.model, torch.nn.Module):
        classifier.model.to(resolve_device(device))
    logits = logits_of(classifier.model, prepared, classifier.preprocess, resolve_device(device), batch_size, amp=amp)
    return Evaluation(classifier, dataset, split_name, prepared, logits)


def evaluation_split(classifier: Classifier, dataset_spec: str | None, data: DataOptions,
                  split: str | None = None, reporter: Reporter = SILENT) -> tuple[Dataset, str, Split]:
    """The dataset `eval` uses for a classifier, the split's name, and the split (labels in the model's order).

    A named dataset without held-out data is evaluated whole: its split is
    called "all". A model's own dataset without one means evaluating the
    training images, which is said.
    """
    dataset = dataset_for(classifier, dataset_spec, data)
    split_name = split or _default_split(dataset)
    chosen = dataset.split(split_name)
    if split is None and split_name == "train":
        if dataset_spec is not None:
            split_name = WHOLE
            reporter.warn(f"{dataset_spec} has no val or test split: evaluating all {len(chosen)} of its images")
        else:
            reporter.warn("this model was trained without held-out data (--val-split 0): evaluating it on its own "
                          "training images, which overstates its accuracy; name other data: vqtool eval MODEL DATASET")
    return dataset, split_name, _aligned(dataset, chosen, classifier.classes)


def dataset_for(classifier: Classifier, spec: str | None, data: DataOptions, load=None) -> Dataset:
    """The dataset named by ``spec`` (evaluated whole unless it has its own held-out split), else the model's own.
    ``load(target, options, recorded)`` reads it (default: the registry's sources); ``recorded`` is the
    checkpoint's dataset record for its own dataset, empty for one named on the command line."""
    load = load or (lambda target, options, recorded: load_dataset(target, options))
    if spec is not None:
        # A dataset named on the command line is evaluated whole unless it has its own held-out split.
        options = data if data.val_split is not None else DataOptions(**{**data.__dict__, "val_split": 0.0})
        return load(spec, options, {})
    recorded = classifier.meta.get("dataset") or {}
    if not recorded.get("source"):
        raise VQError("this model records no dataset; name one: vqtool eval MODEL DATASET", usage=True)
    target = recorded.get("path") or recorded["source"]
    options = DataOptions(data_dir=recorded.get("data_dir") or data.data_dir, val_split=recorded.get("val_split"),
                          seed=recorded.get("seed", 0), strict=data.strict, workers=data.workers,
                          cache_store=data.cache_store)
    try:
        return load(target, options, recorded)
    except VQError as error:
        raise VQError(f"cannot load the model's own dataset ({first_line(error)}); name one: vqtool eval MODEL DATASET") from error


def _default_split(dataset: Dataset) -> str:
    for name in ("test", "val", "train"):
        if getattr(dataset, name) is not None:
            return name
    raise VQError(f"dataset {dataset.name} has no images")


def _aligned(dataset: Dataset, split: Split, classes: list[str]) -> Split:
    """The split with labels renumbered to the model's class order."""
    if dataset.classes == classes:
        return split
    unknown = sorted(set(dataset.classes) - set(classes))
    if unknown:
        raise VQError(f"dataset classes not known to the model: {', '.join(unknown)} "
                      f"(model classes: {', '.join(classes)})", usage=True)
    mapping = torch.tensor([classes.index(name) for name in dataset.classes])
    return Split(labels=mapping[split.labels], pixels=split.pixels, files=split.files, skipped=split.skipped,
                 rejected=split.rejected)
