"""Object detection through Ultralytics YOLO: detect, and train / finetune / eval / confusion of detectors.

The classification commands hand over to this package when their checkpoint
or dataset is a detector's (:func:`is_detection_target`). Nothing here imports
torch or Ultralytics at import time.
"""

from __future__ import annotations

from dataclasses import dataclass


def is_detection_target(target) -> bool:
    """Whether a command argument names YOLO weights, a detector run folder or a detection dataset."""
    if not target:
        return False
    from vqtool.detection.weights import looks_like_weights
    from vqtool.export.metadata import is_exported_classifier
    from vqtool.registry import dataset_sources

    spec = str(target)
    if is_exported_classifier(spec):  # a .onnx or .pt from vqtool export: a classifier despite the suffix
        return False
    return looks_like_weights(spec) or any(
        source.task == "detection" and source.matches is not None and source.matches(spec)
        for source in dataset_sources().values())


@dataclass(frozen=True)
class CommandOptions:
    """A command's option values, and which of them the user typed.

    Detector training keeps Ultralytics' own defaults for every hyperparameter
    the user did not type, since vqtool's defaults are tuned for classifiers.
    """

    values: dict
    typed: frozenset

    @classmethod
    def current(cls) -> "CommandOptions":
        import click

        ctx = click.get_current_context()
        typed = {name for name in ctx.params
                 if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}
        return cls(dict(ctx.params), frozenset(typed))

    def get(self, name: str, default=None):
        return self.values.get(name, default)

    def typed_value(self, name: str):
        """The value if the user typed the option, else None."""
        return self.values.get(name) if name in self.typed else None
