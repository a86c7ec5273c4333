"""vqtool export: a checkpoint or YOLO weights to ONNX, TorchScript or OpenVINO (int8 too), verified against the
original."""

from __future__ import annotations

import click

from vqtool.commands import config_options, output_options, overwrite_option, print_summary, trust_pickle_option
from vqtool.exporting import ExportOptions


@click.command()
@click.argument("checkpoint")
@config_options(ExportOptions, "format", "opset", "dynamic_batch", "imgsz", "half", "output")
@overwrite_option
@config_options(ExportOptions, "verify", "tolerance", "sample_data", "int8", "calibrate", "calibration_images",
                "max_drop")
@trust_pickle_option
@output_options
def export(checkpoint, fmt, output, out, **options):
    """Export CHECKPOINT (a run folder or YOLO weights) to ONNX, TorchScript or OpenVINO, then verify it.

    The export carries the class names and preprocessing, so eval, confusion,
    predict, benchmark and detect take it in place of the checkpoint.
    Verification runs random and real images through both models; beyond
    --tolerance the file is kept but the exit code is 1. An --int8 export is
    judged instead by top-1 agreement and the accuracy it loses on held-out
    images (--max-drop).

    \b
    Examples:
      vqtool export runs/train-20261123-101500
      vqtool export runs/finetune-effnet --format onnx --static -o effnet.onnx
      vqtool export runs/train-20261123-101500 --format torchscript --data ./photos
      vqtool export runs/finetune-effnet --format openvino --int8
      vqtool export runs/finetune-effnet --int8 --calibrate ./photos --calibration-images 200
      vqtool export yolov8n.pt --format onnx --imgsz 640
      vqtool eval runs/train-20261123-101500/model.onnx ./photos
    """
    from pathlib import Path

    from vqtool.exporting import check_verified
    from vqtool.tasks import export as export_model

    options = ExportOptions(format=fmt.lower(), output=Path(output) if output else None, **options)
    summary = export_model(checkpoint, options, out)
    print_summary(out, summary, title="export summary")
    check_verified(summary)
