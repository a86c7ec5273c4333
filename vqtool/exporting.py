"""What an export is asked and how its verification is judged, for classifiers and detectors alike.

Classification checkpoints export through torch with vqtool's metadata embedded
(:mod:`vqtool.classification.export.formats`); YOLO weights go through Ultralytics' own
exporter (:mod:`vqtool.detection.export`); :func:`vqtool.tasks.export` picks
one. Nothing here imports torch, onnx or Ultralytics.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from vqtool.errors import VQError
from vqtool.option_fields import option
from vqtool.telemetry import decline_openvino_telemetry

FP32_TOLERANCE = 1e-4
# fp16 keeps about 3 significant digits, so logits of a few units move by a few thousandths.
FP16_TOLERANCE = 5e-2
INSTALL_HINT = "pip install onnx onnxruntime"  # dependencies of vqtool, so missing only from a broken install
# The optional runtimes, and the line that installs each (the extra works from PyPI and from a clone: pip install -e .[openvino]).
INSTALL_LINES = {"openvino": "pip install 'vqtool[openvino]' (or: pip install openvino nncf)",
                 "nncf": "pip install 'vqtool[openvino]' (or: pip install openvino nncf)"}
DEFAULT_CALIBRATION_IMAGES = 300
DEFAULT_MAX_DROP = 1.0  # accuracy points an int8 export may lose against the checkpoint


@dataclass(frozen=True)
class ExportOptions:
    """What ``vqtool export`` was asked; None means the format's or the checkpoint's own default."""

    format: str = option("onnx", "onnx, torchscript or openvino (an IR folder NAME.openvino; needs vqtool[openvino]); "
                         "YOLO weights also take Ultralytics' other formats (engine, coreml, ...) when their packages "
                         "are installed.", parameter="fmt", complete="format", show_default=True)
    output: Path | None = option(None, "Where to write (default: model.onnx / model.ts beside the checkpoint, or the "
                                 "weights' name with the format's suffix beside YOLO weights); an existing file is "
                                 "refused without --overwrite.", aliases=("-o",), output="either")
    opset: int | None = option(None, "ONNX opset (default 17 for classifiers, Ultralytics' choice for YOLO).", min=7)
    dynamic_batch: bool = option(True, "Any batch size, or a fixed batch of 1 (for YOLO: also fixed image size).",
                                 off_flag="--static", show_default=True)
    imgsz: int | None = option(None, "Input side in pixels (default: the checkpoint's).", min=1)
    half: bool = option(False, "fp16 weights and compute (inputs and outputs stay float32).")
    verify: bool = option(True, "Compare the export with the original model afterwards; exit 1 beyond --tolerance.",
                          show_default=True)
    tolerance: float | None = option(None, "Largest max abs diff that passes: logits for classifiers (default 1e-4, "
                                     "5e-2 with --half), box corners in pixels for YOLO (default 0.05, 2 with "
                                     "--half).", min=0)
    sample_data: str | None = option(None, "Real images to verify with (default: the checkpoint's held-out split; for "
                                     "YOLO, Ultralytics' sample images).", flag="--data", metavar="DATASET")
    overwrite: bool = False  # --overwrite (the commands' shared option): replace an existing file at the output path
    int8: bool = option(False, "Classifiers, onnx or openvino: post-training int8 (ONNX Runtime static QDQ; OpenVINO "
                        "NNCF), calibrated on real images and judged by the accuracy lost on held-out ones.")
    calibrate: str | None = option(None, "--int8: images to calibrate with (default: the run's own training images).",
                                   metavar="DATASET")
    calibration_images: int = option(DEFAULT_CALIBRATION_IMAGES, "--int8: how many calibration images (spread over "
                                     "the data).", min=1, show_default=True)
    max_drop: float = option(DEFAULT_MAX_DROP, "--int8: accuracy points the export may lose against the checkpoint on "
                             "held-out images; beyond it the file is kept and the exit code is 1.", min=0,
                             metavar="POINTS", show_default=True)

    @property
    def max_abs_diff(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        return FP16_TOLERANCE if self.half else FP32_TOLERANCE


def check_verified(summary: dict) -> None:
    """Fail (exit 1) when verification found the export beyond tolerance; the file and summary stay for a look."""
    if summary.get("verified") is False and "accuracy_drop" in summary:
        raise VQError(f"{summary['file']} loses {summary['accuracy_drop']:.2f} accuracy points against the "
                      f"checkpoint on {summary['held_out_images']} held-out images (--max-drop "
                      f"{summary['max_drop']:g}); the file is kept, flagged in its summary")
    if summary.get("verified") is False:
        raise VQError(f"{summary['file']} differs from the original beyond the tolerance: max abs diff "
                      f"{summary.get('max_abs_diff', summary.get('box_max_abs_diff')):.3g} > {summary['tolerance']:g}"
                      f"{mismatched_detections(summary)} (--tolerance X accepts more)")


def mismatched_detections(summary: dict) -> str:
    if "matched" not in summary or summary["matched"] == summary["detections"] == summary["exported_detections"]:
        return ""
    return (f", {summary['matched']} of {summary['detections']} detections matched "
            f"({summary['exported_detections']} from the export)")


def require(module: str, purpose: str):
    """Import a package a partial install may lack, or fail with one line saying how to install it (never installs)."""
    if module.split(".")[0] in ("openvino", "nncf"):
        decline_openvino_telemetry()  # before the import, which sets telemetry up
    try:
        return importlib.import_module(module)
    except ImportError as error:
        install = INSTALL_LINES.get(module.split(".")[0], INSTALL_HINT)
        raise VQError(f"{purpose} needs the {module} package, which is not installed: {install}") from error



def export_warnings() -> tuple[type[Warning], ...]:
    """Warnings every export prints and the user can do nothing about, hidden outside --debug.

    The TorchScript-based ONNX exporter and torch.jit.trace announce their
    deprecation, and the tracer flags Python ints it records (timm's "same"
    padding); verification afterwards checks the traced graph on other batch
    sizes and real images.
    """
    import torch

    return DeprecationWarning, FutureWarning, torch.jit.TracerWarning
