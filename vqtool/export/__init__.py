"""Exporting models to ONNX and TorchScript (and, for YOLO, Ultralytics' other formats), then verifying them.

Classification checkpoints export through torch with vqtool's metadata embedded
(:mod:`vqtool.export.metadata`); :mod:`vqtool.export.runtime` loads them back
for ``eval`` and ``confusion``. YOLO weights go through Ultralytics' own
exporter (:mod:`vqtool.export.yolo`). Nothing here imports torch, onnx or
Ultralytics at import time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from vqtool.errors import VQError

FP32_TOLERANCE = 1e-4
# fp16 keeps about 3 significant digits, so logits of a few units move by a few thousandths.
FP16_TOLERANCE = 5e-2
INSTALL_HINT = "pip install onnx onnxruntime"  # dependencies of vqtool, so missing only from a broken install


@dataclass(frozen=True)
class ExportOptions:
    """What ``vqtool export`` was asked; None means the format's or the checkpoint's own default."""

    format: str = "onnx"
    output: Path | None = None
    opset: int | None = None
    dynamic_batch: bool = True
    imgsz: int | None = None
    half: bool = False
    verify: bool = True
    tolerance: float | None = None
    sample_data: str | None = None  # the dataset whose images form the real verification batch

    @property
    def max_abs_diff(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        return FP16_TOLERANCE if self.half else FP32_TOLERANCE


def export(checkpoint: str, options: ExportOptions, log=print) -> dict:
    """Export a classification checkpoint or YOLO weights; the summary ``vqtool export`` prints."""
    from vqtool.engine.checkpoint import resolve_checkpoint

    if is_exported(checkpoint):  # model.onnx beside model.json would otherwise pass for a checkpoint
        raise VQError(f"{checkpoint}: already an exported model; export the checkpoint or weights it came from",
                      usage=True)
    try:
        resolve_checkpoint(checkpoint)
    except VQError:
        from vqtool.detection.weights import looks_like_weights

        if not looks_like_weights(checkpoint):  # YOLO weights may also be a bare official name (yolov8n.pt)
            raise
        from vqtool.export.yolo import export_detector

        return export_detector(checkpoint, options, log)
    from vqtool.export.classifier import export_classifier

    return export_classifier(checkpoint, options, log)


def check_verified(summary: dict) -> None:
    """Fail (exit 1) when verification found the export beyond tolerance; the file and summary stay for a look."""
    if summary.get("verified") is False:
        raise VQError(f"{summary['file']} differs from the original beyond the tolerance: max abs diff "
                      f"{summary.get('max_abs_diff', summary.get('box_max_abs_diff')):.3g} > {summary['tolerance']:g}"
                      f"{mismatched_detections(summary)} (--tolerance X accepts more)")


def mismatched_detections(summary: dict) -> str:
    if "matched" not in summary or summary["matched"] == summary["detections"] == summary["exported_detections"]:
        return ""
    return (f", {summary['matched']} of {summary['detections']} detections matched "
            f"({summary['exported_detections']} from the export)")


def is_exported(path: str | Path) -> bool:
    """An already exported model (ONNX, or TorchScript with vqtool metadata), which cannot be exported again."""
    from vqtool.export.metadata import read_metadata

    return Path(path).is_file() and (Path(path).suffix.lower() == ".onnx" or read_metadata(path) is not None)


def require(module: str, purpose: str):
    """Import a package a partial install may lack, or fail with one line saying how to install it (never installs)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise VQError(f"{purpose} needs the {module} package, which is not installed: {INSTALL_HINT}") from error
