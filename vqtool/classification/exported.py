"""Exported classifiers as vqtool Classifiers, for ``eval`` and ``confusion``.

ONNX files run through onnxruntime (CPU provider unless told otherwise),
TorchScript files through ``torch.jit.load``; both take their class names and
preprocessing from the metadata embedded at export.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from vqtool.data.pipeline import Preprocess
from vqtool.classification.classifier import Classifier
from vqtool.errors import VQError, first_line
from vqtool.exporting import require
from vqtool.classification.export_metadata import checked_metadata

CPU = ("CPUExecutionProvider",)


class OnnxModel:
    """An onnxruntime session as a callable from a normalised float batch to logits, as predict() expects."""

    def __init__(self, source: Path | bytes, providers=CPU):
        """``source``: an .onnx file, or a serialised model held in memory."""
        name = "the ONNX model" if isinstance(source, bytes) else source
        ort = require("onnxruntime", f"running {getattr(name, 'name', name)}")
        try:
            self.session = ort.InferenceSession(source if isinstance(source, bytes) else str(source),
                                                providers=list(providers))
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise VQError(f"{name}: onnxruntime cannot load it ({first_line(error)})") from error
        self.input = self.session.get_inputs()[0].name
        batch = self.session.get_inputs()[0].shape[0]
        self.batch = batch if isinstance(batch, int) else None  # a --static export takes exactly this many

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().float().cpu().contiguous().numpy()
        chunks = [array] if self.batch is None else np.split(array, range(self.batch, len(array), self.batch))
        return torch.from_numpy(np.concatenate([self.session.run(None, {self.input: c})[0] for c in chunks]))


def load_onnx(path: str | Path) -> Classifier:
    path = Path(path)
    document = checked_metadata(path)
    return _classifier(OnnxModel(path), document)


def load_torchscript(path: str | Path) -> Classifier:
    path = Path(path)
    document = checked_metadata(path)
    try:
        with warnings.catch_warnings():  # torch announces TorchScript's deprecation on every load
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        raise VQError(f"{path}: cannot load as TorchScript ({first_line(error)})") from error
    return _classifier(model.eval(), document)


def _classifier(model, document: dict) -> Classifier:
    classes = document.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(name, str) for name in classes)):
        raise VQError("the exported model's metadata has no list of class names", usage=True)
    try:
        preprocess = Preprocess.from_dict(document.get("preprocess"))
    except ValueError as error:
        raise VQError(f"the exported model's metadata: {first_line(error)}", usage=True) from error
    return Classifier(model, classes, preprocess, document)


LOADERS = {".onnx": load_onnx, ".ts": load_torchscript, ".pt": load_torchscript}
