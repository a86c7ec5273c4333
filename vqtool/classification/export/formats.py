"""Classification checkpoints to ONNX, TorchScript and OpenVINO IR, with vqtool's metadata embedded, then verified.

ONNX goes through torch's TorchScript-based exporter (``dynamo=False``): it
needs only the ``onnx`` package and gives correct models with a dynamic batch
axis for the registry's small CNNs, torchvision and timm architectures (the
dynamo exporter needs ``onnxscript`` besides). TorchScript is made with
``torch.jit.trace``, since ``torch.jit.script`` rejects most timm and
torchvision models. OpenVINO IRs are converted by OpenVINO from that same
ONNX. ``--int8`` (ONNX and OpenVINO) quantizes after calibration on real
images (:mod:`vqtool.classification.export.quantize`) and is judged by the accuracy
it loses on held-out images rather than by logit differences.
"""

from __future__ import annotations

import copy
import inspect
import io
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from vqtool.classification.checkpoints.format import load_checkpoint
from vqtool.runs.atomic_files import atomic_save, temporary_path
from vqtool.errors import VQError, first_line
from vqtool.reporter import Reporter
from vqtool.exporting import ExportOptions, export_warnings, require
from vqtool.classification.checkpoints.export_format import (EXTRA_FILE, INPUT_NAME, OUTPUT_NAME, check_options, describe,
                                                   embed_in_onnx, output_path, write_ir_document)
from vqtool.classification.export.verify import verify_classifier

DEFAULT_OPSET = 17
TRACE_BATCH = 2  # not 1, so that no size-1 batch is specialised into the graph


class Float32Interface(torch.nn.Module):
    """Computes in fp16 but takes and returns float32, so a --half export is fed like any other."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def export_classifier(spec: str, options: ExportOptions, reporter: Reporter, held_out=None) -> dict:
    """Write the exported file, verify it unless asked not to; the summary ``vqtool export`` prints.
    ``held_out(checkpoint, preprocess, dataset_spec)`` finds real images to verify with (see
    :func:`~vqtool.classification.export.verify.held_out_split`, the default)."""
    check_options(options)
    for module, purpose in packages_needed(options):  # before the minutes of calibration, not after
        require(module, purpose)
    checkpoint = load_checkpoint(spec)
    preprocess = checkpoint.preprocess.at_size(options.imgsz)
    output = output_path(checkpoint.path, options)
    started = time.perf_counter()
    batch = None if options.dynamic_batch or options.format == "torchscript" else 1
    precision = "int8" if options.int8 else "float16" if options.half else "float32"
    document = describe(checkpoint.meta, preprocess.to_dict(), batch=batch, precision=precision,
                        exported_as=options.format)
    model = Float32Interface(copy.deepcopy(checkpoint.model)) if options.half else checkpoint.model
    example = torch.randn(batch or TRACE_BATCH, preprocess.channels, preprocess.size, preprocess.size)
    calibration = None
    if options.int8:
        from vqtool.classification.export.quantize import calibration_images

        calibration = calibration_images(checkpoint, preprocess, options, reporter)
    output.parent.mkdir(parents=True, exist_ok=True)
    WRITERS[options.format](model, example, output, document, options, calibration)
    summary = {"file": str(output), "format": options.format, "task": checkpoint.meta.get("task", "classification"),
               "architecture": checkpoint.meta["architecture"], "classes": len(checkpoint.classes),
               "imgsz": preprocess.size, "batch": batch or "dynamic", "precision": precision,
               "size_mb": round(size_of(output) / 1e6, 2), "seconds": round(time.perf_counter() - started, 2)}
    reporter.log(f"wrote {output} ({summary['size_mb']} MB, {options.format} {precision}, batch {summary['batch']})")
    if options.verify:
        summary.update(verify(checkpoint, preprocess, output, options, reporter, held_out))
    return summary


def packages_needed(options: ExportOptions) -> list[tuple[str, str]]:
    """(package, what needs it) for the export ``options`` ask for."""
    needed = {"onnx": [("onnx", "exporting to ONNX")], "torchscript": [],
              "openvino": [("onnx", "exporting to OpenVINO"), ("openvino", "exporting to OpenVINO")]}[options.format]
    if options.int8:
        needed.append(("nncf", "an int8 OpenVINO export") if options.format == "openvino"
                      else ("onnxruntime", "an int8 ONNX export"))
    return needed


def verify(checkpoint, preprocess, output: Path, options: ExportOptions, reporter: Reporter, held_out=None) -> dict:
    """Logits compared within --tolerance; an int8 export, whose logits move by design, by held-out accuracy."""
    if not options.int8:
        return verify_classifier(checkpoint, preprocess, output, options, reporter, held_out)
    from vqtool.classification.inference.exported import load_exported
    from vqtool.classification.export.quantize import judge_int8

    return judge_int8(checkpoint, preprocess, load_exported(output).model, options, reporter)


def size_of(path: Path) -> int:
    """Bytes of a file, or of the files of a folder (an OpenVINO IR)."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return path.stat().st_size


def write_onnx(model, example, path: Path, document: dict, options: ExportOptions, calibration=None) -> None:
    def save(tmp: str) -> None:
        if calibration is None:
            to_onnx(model, example, tmp, dynamic_batch=options.dynamic_batch, opset=options.opset)
        else:
            from vqtool.classification.export.quantize import quantize_onnx

            with tempfile.TemporaryDirectory(dir=path.parent) as folder:
                source = Path(folder) / "fp32.onnx"
                to_onnx(model, example, str(source), dynamic_batch=options.dynamic_batch, opset=options.opset)
                quantize_onnx(source, Path(tmp), calibration, None if options.dynamic_batch else 1)
        embed_in_onnx(Path(tmp), document)

    _writing(lambda: atomic_save(path, save, replace=options.overwrite), document["architecture"], "ONNX")


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


def write_openvino(model, example, path: Path, document: dict, options: ExportOptions, calibration=None) -> None:
    """An IR folder (model.xml, model.bin, vqtool.json) converted by OpenVINO from our ONNX; NNCF int8 when asked."""
    ov = require("openvino", "exporting to OpenVINO")

    def save(folder: Path) -> None:
        source = folder / "source.onnx"
        to_onnx(model, example, str(source), dynamic_batch=options.dynamic_batch)
        converted = ov.convert_model(str(source))
        if calibration is not None:
            from vqtool.classification.export.quantize import quantize_openvino

            converted = quantize_openvino(converted, calibration, None if options.dynamic_batch else 1)
        ov.save_model(converted, str(folder / "model.xml"), compress_to_fp16=False)
        source.unlink()
        write_ir_document(folder, document)

    _writing(lambda: _folder_saved(path, save, options.overwrite), document["architecture"], "OpenVINO")


def _folder_saved(path: Path, save, overwrite: bool) -> None:
    """``save(folder)`` fills a fresh folder beside ``path``, which then takes its place (the old one goes last)."""
    fresh = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        save(fresh)
        if os.path.lexists(path):
            if not overwrite:
                raise VQError(f"{path} already exists; pass --overwrite to replace it", usage=True)
            old = temporary_path(path)
            os.rename(path, old)
            os.rename(fresh, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(fresh, path)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def write_torchscript(model, example, path: Path, document: dict, options: ExportOptions, calibration=None) -> None:
    def save(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", export_warnings())
            traced = torch.jit.trace(model, example)
            # Into memory, then to the file: torch's zip writer, failing to write (a full disk) as it closes,
            # throws from a C++ destructor and aborts the interpreter; Python's write raises an OSError.
            archive = io.BytesIO()
            torch.jit.save(traced, archive, _extra_files={EXTRA_FILE: json.dumps(document)})
        Path(tmp).write_bytes(archive.getvalue())

    _writing(lambda: atomic_save(path, save, replace=options.overwrite), document["architecture"], "TorchScript")


def _writing(write, architecture: str, format_name: str) -> None:
    """``write()`` (atomic, over an existing file only with --overwrite); an exporter's failure becomes one line."""
    try:
        with torch.no_grad():
            write()
    except VQError:
        raise
    except Exception as error:  # the exporters raise many types (RuntimeError, torch.onnx errors, TypeError...)
        raise VQError(f"{architecture} cannot be exported to {format_name}: {first_line(error)}") from error


WRITERS = {"onnx": write_onnx, "torchscript": write_torchscript, "openvino": write_openvino}
