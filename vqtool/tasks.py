"""Which task a command's target belongs to: the one place that tells a classifier from a detector.

Commands that serve several tasks (train, finetune, eval, confusion, export)
ask :func:`task_of` and hand over to that task's package. A new task is a new
package and one more case here. Nothing here imports torch or Ultralytics.
"""

from __future__ import annotations

CLASSIFICATION = "classification"
DETECTION = "detection"


def task_of(*targets) -> str:
    """The task of a command's targets (weights, run folders, data.yaml files, datasets); None entries are skipped.

    YOLO weights, a detector run folder or a detection dataset make it
    detection; everything else (vqtool checkpoints, exported classifiers,
    class folders, the classics) classification.
    """
    return DETECTION if any(_is_detection_target(str(t)) for t in targets if t) else CLASSIFICATION


def _is_detection_target(spec: str) -> bool:
    from vqtool.classification.export_metadata import is_exported_classifier
    from vqtool.detection.weights import looks_like_weights
    from vqtool.registry import dataset_sources

    if is_exported_classifier(spec):  # a .onnx or .pt from vqtool export: a classifier despite the suffix
        return False
    return looks_like_weights(spec) or any(
        source.task == DETECTION and source.matches is not None and source.matches(spec)
        for source in dataset_sources().values())


def is_classifier(spec: str) -> bool:
    """A vqtool classification checkpoint (run folder, model.safetensors, model.json) or an exported classifier."""
    from vqtool.classification.checkpoint_files import resolve_checkpoint
    from vqtool.classification.export_metadata import is_exported_classifier
    from vqtool.errors import VQError

    if is_exported_classifier(spec):
        return True
    try:
        resolve_checkpoint(spec)
    except VQError:
        return False
    return True


def require_detector(weights: str) -> None:
    """A usage error, in one line, when ``weights`` given where a detector is needed hold a classifier."""
    from vqtool.errors import VQError

    if is_classifier(weights):
        raise VQError(f"{weights}: a classifier, not a detector; classify images with `vqtool predict`", usage=True)


def export(checkpoint: str, options, reporter) -> dict:
    """Export a classification checkpoint or YOLO weights; the summary ``vqtool export`` prints."""
    from vqtool.classification.export_metadata import is_exported
    from vqtool.errors import VQError

    if is_exported(checkpoint):  # model.onnx beside model.json would otherwise pass for a checkpoint
        raise VQError(f"{checkpoint}: already an exported model; export the checkpoint or weights it came from",
                      usage=True)
    if task_of(checkpoint) == DETECTION:
        from vqtool.detection.export import export_detector

        if options.int8:
            raise VQError(f"--int8 quantizes classifiers; {checkpoint} is a YOLO detector: use Ultralytics' own int8 "
                          f"export (yolo export model={checkpoint} format=openvino int8=True data=DATA.yaml)",
                          usage=True)
        return export_detector(checkpoint, options, reporter)
    from vqtool.classification.checkpoint_files import check_model_path
    from vqtool.classification.export_metadata import check_options

    check_options(options)  # usage errors before torch loads
    check_model_path(checkpoint)
    from vqtool.classification.export import export_classifier

    return export_classifier(checkpoint, options, reporter)


def predict(sources, weights: str, options):
    """Classify ``sources`` with a classifier of any kind: (the stream of records and Failures, the class names)."""
    from vqtool.classification.predict import predict as classify

    classifier = classifier_for_predict(weights)
    return classify(sources, classifier, options), classifier.classes


def classifier_for_predict(weights: str):
    """A vqtool checkpoint or export, or Ultralytics classification weights; a detector is told to use detect."""
    from vqtool.classification.classifier import Classifier
    from vqtool.classification.evaluate import load_classifier

    if task_of(weights) != DETECTION:
        return load_classifier(weights)
    from vqtool.data.pipeline import Preprocess
    from vqtool.detection.classify import load_yolo_classifier

    yolo = load_yolo_classifier(weights)
    # Ultralytics' classify_transforms: shorter side to imgsz, centre crop, [0, 1] pixels (mean 0, std 1).
    preprocess = Preprocess(size=yolo.imgsz, channels=3, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return Classifier(yolo.module, yolo.classes, preprocess,
                      {"architecture": "ultralytics", "dataset": {"source": "Ultralytics", "flips": yolo.flips}})
