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


def require_detector(weights: str) -> None:
    """A usage error, in one line, when ``weights`` given where a detector is needed hold a classifier."""
    from vqtool.classification.checkpoint_files import resolve_checkpoint
    from vqtool.classification.export_metadata import is_exported_classifier
    from vqtool.errors import VQError

    if is_exported_classifier(weights):
        kind = "an exported vqtool classifier"
    else:
        try:
            resolve_checkpoint(weights)
        except VQError:
            return
        kind = "a vqtool classifier checkpoint"
    raise VQError(f"{weights}: {kind}, not a detector; classify images with vqtool predict", usage=True)


def export(checkpoint: str, options, reporter) -> dict:
    """Export a classification checkpoint or YOLO weights; the summary ``vqtool export`` prints."""
    from vqtool.classification.export_metadata import is_exported
    from vqtool.errors import VQError

    if is_exported(checkpoint):  # model.onnx beside model.json would otherwise pass for a checkpoint
        raise VQError(f"{checkpoint}: already an exported model; export the checkpoint or weights it came from",
                      usage=True)
    if task_of(checkpoint) == DETECTION:
        from vqtool.detection.export import export_detector

        return export_detector(checkpoint, options, reporter)
    from vqtool.classification.checkpoint_files import check_model_path
    from vqtool.classification.export_metadata import check_options

    check_options(options)  # usage errors before torch loads
    check_model_path(checkpoint)
    from vqtool.classification.export import export_classifier

    return export_classifier(checkpoint, options, reporter)
