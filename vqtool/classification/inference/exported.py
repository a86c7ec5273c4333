"""Exported classifiers as vqtool Classifiers, for ``eval`` and ``confusion``.

ONNX files (fp32 or int8) run through onnxruntime (CPU provider unless told
otherwise), TorchScript files through ``torch.jit.load``, OpenVINO IR folders
through OpenVINO (fp32 arithmetic unless asked for bf16, so results do not
depend silently on the CPU); all take their class names and preprocessing from
the metadata embedded at export, and all use as many threads as torch
(``--threads``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from vqtool.data.pipeline import Preprocess
from vqtool.classification.inference.classifier import Classifier
from vqtool.errors import VQError, first_line
from vqtool.exporting import require
from vqtool.classification.checkpoints.export_format import OPENVINO_SUFFIX, checked_metadata, ir_folder

CPU = ("CPUExecutionProvider",)


class OnnxModel:
    """An onnxruntime session as a callable from a normalised float batch to logits, as predict() expects."""

    def __init__(self, source: Path | bytes, providers=CPU):
        """``source``: an .onnx file, or a serialised model held in memory."""
        name = "the ONNX model" if isinstance(source, bytes) else source
        ort = require("onnxruntime", f"running {getattr(name, 'name', name)}")
        settings = ort.SessionOptions()
        settings.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(source if isinstance(source, bytes) else str(source),
                                                sess_options=settings, providers=list(providers))
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise VQError(f"{name}: onnxruntime cannot load it ({first_line(error)})") from error
        self.input = self.session.get_inputs()[0].name
        batch = self.session.get_inputs()[0].shape[0]
        self.batch = batch if isinstance(batch, int) else None  # a --static export takes exactly this many

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().float().cpu().contiguous().numpy()
        chunks = [array] if self.batch is None else np.split(array, range(self.batch, len(array), self.batch))
        return torch.from_numpy(np.concatenate([self.session.run(None, {self.input: c})[0] for c in chunks]))


class OpenVinoModel:
    """A compiled OpenVINO model as a callable from a normalised float batch to logits."""

    def __init__(self, folder: Path, precision: str = "f32"):
        """``precision``: OpenVINO's INFERENCE_PRECISION_HINT (f32, or bf16 where the CPU computes it natively)."""
        ov = require("openvino", f"running {folder.name}")
        try:
            core = ov.Core()
            model = core.read_model(str(folder / "model.xml"))
            self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                              "INFERENCE_NUM_THREADS": torch.get_num_threads()})
        except Exception as error:  # OpenVINO raises RuntimeError and its own types for bad IRs
            raise VQError(f"{folder}: OpenVINO cannot load it ({first_line(error)})") from error
        self.request = self.compiled.create_infer_request()
        batch = self.compiled.input(0).get_partial_shape()[0]
        self.batch = None if batch.is_dynamic else batch.get_length()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().float().cpu().contiguous().numpy()
        chunks = [array] if self.batch is None else np.split(array, range(self.batch, len(array), self.batch))
        return torch.from_numpy(np.concatenate([self.request.infer({0: c})[0].copy() for c in chunks]))


def load_openvino(path: str | Path, precision: str = "f32") -> Classifier:
    document = checked_metadata(path)
    return _classifier(OpenVinoModel(ir_folder(path), precision), document)


def load_exported(path: str | Path) -> Classifier:
    """Any export, by its suffix (an IR's model.xml counts as its folder)."""
    suffix = OPENVINO_SUFFIX if ir_folder(path) is not None else Path(path).suffix.lower()
    return LOADERS[suffix](path)


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


LOADERS = {".onnx": load_onnx, ".ts": load_torchscript, ".pt": load_torchscript, OPENVINO_SUFFIX: load_openvino}
