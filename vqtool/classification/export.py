"""Classification checkpoints to ONNX and TorchScript, with vqtool's metadata embedded, then verified.

ONNX goes through torch's TorchScript-based exporter (``dynamo=False``): it
needs only the ``onnx`` package and gives correct models with a dynamic batch
axis for the registry's small CNNs, torchvision and timm architectures (the
dynamo exporter needs ``onnxscript`` besides). TorchScript is made with
``torch.jit.trace``, since ``torch.jit.script`` rejects most timm and
torchvision models.
"""

from __future__ import annotations

import copy
import inspect
import io
import json
import time
import warnings
from pathlib import Path

import torch

from vqtool.classification.checkpoint import load_checkpoint
from vqtool.runs.folder import atomic_save
from vqtool.errors import VQError, first_line
from vqtool.reporter import Reporter
from vqtool.exporting import ExportOptions, export_warnings, require
from vqtool.classification.export_metadata import (EXTRA_FILE, INPUT_NAME, OUTPUT_NAME, check_options, describe,
                                                   embed_in_onnx, output_path)
from vqtool.classification.verify import verify_classifier

DEFAULT_OPSET = 17
TRACE_BATCH = 2  # not 1, so that no size-1 batch is specialised into the graph


class Float32Interface(torch.nn.Module):
    """Computes in fp16 but takes and returns float32, so a --half export is fed like any other."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def export_classifier(spec: str, options: ExportOptions, reporter: Reporter) -> dict:
    """Write the exported file, verify it unless asked not to; the summary ``vqtool export`` prints."""
    check_options(options)
    checkpoint = load_checkpoint(spec)
    preprocess = checkpoint.preprocess.at_size(options.imgsz)
    output = output_path(checkpoint.path, options)
    started = time.perf_counter()
    batch = None if options.dynamic_batch or options.format == "torchscript" else 1
    document = describe(checkpoint.meta, preprocess.to_dict(), batch=batch,
                        precision="float16" if options.half else "float32", exported_as=options.format)
    model = Float32Interface(copy.deepcopy(checkpoint.model)) if options.half else checkpoint.model
    example = torch.randn(batch or TRACE_BATCH, preprocess.channels, preprocess.size, preprocess.size)
    output.parent.mkdir(parents=True, exist_ok=True)
    WRITERS[options.format](model, example, output, document, options)
    summary = {"file": str(output), "format": options.format, "task": "classification",
               "architecture": checkpoint.meta["architecture"], "classes": len(checkpoint.classes),
               "imgsz": preprocess.size, "batch": batch or "dynamic", "precision": document["precision"],
               "size_mb": round(output.stat().st_size / 1e6, 2), "seconds": round(time.perf_counter() - started, 2)}
    reporter.log(f"wrote {output} ({summary['size_mb']} MB, {options.format}, batch {summary['batch']})")
    if options.verify:
        summary.update(verify_classifier(checkpoint, preprocess, output, options, reporter))
    return summary


def write_onnx(model, example, path: Path, document: dict, options: ExportOptions) -> None:
    require("onnx", "exporting to ONNX")

    def save(tmp: str) -> None:
        to_onnx(model, example, tmp, dynamic_batch=options.dynamic_batch, opset=options.opset)
        embed_in_onnx(Path(tmp), document)

    _writing(path, save, document["architecture"], "ONNX", options.overwrite)


def to_onnx(model, example, destination, *, dynamic_batch: bool = True, opset: int | None = None) -> None:
    """``model`` as ONNX into ``destination`` (a path or a binary file object)."""
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", export_warnings())
        torch.onnx.export(model, (example,), destination, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=axes, opset_version=opset or DEFAULT_OPSET, **_legacy_exporter())


def _legacy_exporter() -> dict:
    """Since torch 2.9 torch.onnx.export defaults to the dynamo exporter; older versions have no such switch."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def write_torchscript(model, example, path: Path, document: dict, options: ExportOptions) -> None:
    def save(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", export_warnings())
            traced = torch.jit.trace(model, example)
            # Into memory, then to the file: torch's zip writer, failing to write (a full disk) as it closes,
            # throws from a C++ destructor and aborts the interpreter; Python's write raises an OSError.
            archive = io.BytesIO()
            torch.jit.save(traced, archive, _extra_files={EXTRA_FILE: json.dumps(document)})
        Path(tmp).write_bytes(archive.getvalue())

    _writing(path, save, document["architecture"], "TorchScript", options.overwrite)


def _writing(path: Path, save, architecture: str, format_name: str, overwrite: bool) -> None:
    """Write atomically (over an existing file only with ``overwrite``); an exporter's failure becomes one line."""
    try:
        with torch.no_grad():
            atomic_save(path, save, replace=overwrite)
    except VQError:
        raise
    except Exception as error:  # the exporters raise many types (RuntimeError, torch.onnx errors, TypeError...)
        raise VQError(f"{architecture} cannot be exported to {format_name}: {first_line(error)}") from error


WRITERS = {"onnx": write_onnx, "torchscript": write_torchscript}
