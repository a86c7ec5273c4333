"""Evaluating YOLO detectors: Ultralytics' validation, reported the vqtool way (`eval` and `confusion`)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from vqtool.detection.data import YoloDataset, no_valid_images_as_error, usable_images
from vqtool.detection.predict import ultralytics_device
from vqtool.detection.ultralytics_env import keeping_threads
from vqtool.detection.weights import load_detector
from vqtool.errors import VQError
from vqtool.reporter import SILENT, Reporter

METRIC_KEYS = {"metrics/precision(B)": "precision", "metrics/recall(B)": "recall",
               "metrics/mAP50(B)": "map50", "metrics/mAP50-95(B)": "map50_95"}
CONFUSION_CONF = 0.25  # detections below this confidence do not count in the confusion matrix
CONFUSION_IOU = 0.45  # Ultralytics' matching threshold between a detection and a label
BACKGROUND = "background"


def box_metrics(values: dict) -> dict:
    """precision, recall, map50, map50_95 from Ultralytics' metric names."""
    return {ours: float(values[theirs]) for theirs, ours in METRIC_KEYS.items()}


@dataclass
class Validation:
    weights: str
    dataset: YoloDataset
    split: str
    metrics: object  # Ultralytics DetMetrics
    images: int


def validate(checkpoint: str, dataset_spec: str | None, *, split: str | None = None, device: str = "auto",
             batch_size: int | None = None, conf: float | None = None, plots: bool = False,
             same_classes: bool = False, reporter: Reporter = SILENT) -> Validation:
    """Ultralytics' ``model.val`` on a split (default: test, else val); None keeps Ultralytics' defaults.

    Images Ultralytics would leave out are named; a data.yaml whose class names
    differ from the detector's is an error with ``same_classes``, else a warning.
    """
    model = load_detector(checkpoint)
    dataset = _dataset_for(model, dataset_spec)
    split = dataset.check_split(split or dataset.heldout_split)
    _compare_classes(model, dataset, same_classes, reporter)
    usable_images(dataset, split, reporter)
    args = {"data": str(dataset.yaml), "split": split, "device": ultralytics_device(device), "plots": plots,
            "verbose": False}
    if batch_size:
        args["batch"] = batch_size
    if conf is not None:
        args["conf"] = conf
    seen = {}  # the validator, which counts the images, is not returned: a callback reads it
    model.add_callback("on_val_end", lambda validator: seen.update(images=validator.seen))
    # Ultralytics always creates a save folder for validation; keep it out of the user's way.
    with tempfile.TemporaryDirectory(prefix="vqtool-val-") as scratch, keeping_threads(), \
            no_valid_images_as_error(dataset):
        metrics = model.val(project=scratch, name="val", exist_ok=True, **args)
    return Validation(str(model.ckpt_path or checkpoint), dataset, split, metrics, seen["images"])


def _compare_classes(model, dataset: YoloDataset, required: bool, reporter: Reporter) -> None:
    names = [model.names[i] for i in sorted(model.names)]
    if names == dataset.classes:
        return
    message = (f"the detector's classes ({_listed(names)}) differ from {dataset.yaml.name}'s "
               f"({_listed(dataset.classes)})")
    if required:
        raise VQError(f"{message}: a confusion matrix needs the classes it was trained on", usage=True)
    reporter.warn(f"{message}: the figures pair them by class number")


def _listed(names: list[str]) -> str:
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def _dataset_for(model, spec: str | None) -> YoloDataset:
    from vqtool.data import load_dataset

    if spec is None:
        recorded = model.overrides.get("data")
        if not (recorded and Path(recorded).is_file()):
            raise VQError("this detector records no dataset found here; name one: vqtool eval WEIGHTS DATA.yaml",
                          usage=True)
        spec = recorded
    dataset = load_dataset(spec)
    if not isinstance(dataset, YoloDataset):
        raise VQError(f"{spec}: not a detection dataset (a detector is evaluated on a YOLO data.yaml)", usage=True)
    return dataset


def evaluate_detector(checkpoint: str, dataset_spec: str | None, *, reporter: Reporter = SILENT, **options) -> dict:
    """The document ``vqtool eval WEIGHTS DATA.yaml --json`` prints."""
    validation = validate(checkpoint, dataset_spec, reporter=reporter, **options)
    metrics, names = validation.metrics, validation.dataset.classes
    per_class = {}
    for i, class_index in enumerate(metrics.ap_class_index):
        precision, recall, map50, map50_95 = (float(v) for v in metrics.class_result(i))
        per_class[names[class_index]] = {"precision": precision, "recall": recall, "map50": map50,
                                         "map50_95": map50_95, "images": int(metrics.nt_per_image[class_index]),
                                         "instances": int(metrics.nt_per_class[class_index])}
    return {"dataset": validation.dataset.name, "split": validation.split, "weights": validation.weights,
            "images": validation.images,
            "instances": int(metrics.nt_per_class.sum()), **box_metrics(metrics.results_dict),
            "per_class": per_class}


def detection_confusion(checkpoint: str, dataset_spec: str | None, *, top: int, normalize: bool,
                        reporter: Reporter = SILENT, **options) -> dict:
    """The document ``vqtool confusion`` prints: rows are the true class, the last row and column background.

    A detection counts at confidence >= 0.25 and matches a label at IoU >= 0.45;
    the background row holds false detections, the background column missed objects.
    """
    import torch

    from vqtool.metrics import confusion_document

    validation = validate(checkpoint, dataset_spec, conf=CONFUSION_CONF, plots=True, same_classes=True,
                          reporter=reporter, **options)
    counts = torch.from_numpy(validation.metrics.confusion_matrix.matrix).T.round().long()  # Ultralytics: [pred, true]
    classes = [*validation.dataset.classes, BACKGROUND]
    return {"dataset": validation.dataset.name, "split": validation.split, "n": int(counts[:-1].sum()),
            **confusion_document(counts, classes, top=top, normalize=normalize),
            "conf": CONFUSION_CONF, "iou": CONFUSION_IOU}
