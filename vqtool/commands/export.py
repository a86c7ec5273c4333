"""vqtool export: a checkpoint or YOLO weights to ONNX, TorchScript or OpenVINO (int8 too), verified against the
original."""

from __future__ import annotations

import click

from vqtool.commands import output_options, overwrite_option, print_summary, trust_pickle_option
from vqtool.commands.types import FiniteFloat, OutputPath
from vqtool.exporting import ExportOptions

DEFAULTS = ExportOptions()

FORMATS = ("onnx", "torchscript", "openvino")  # for completion; YOLO weights also take Ultralytics' other formats


def complete_format(ctx, param, incomplete):
    return [click.shell_completion.CompletionItem(name) for name in FORMATS if name.startswith(incomplete)]


@click.command()
@click.argument("checkpoint")
@click.option("--format", "fmt", default=DEFAULTS.format, show_default=True, shell_complete=complete_format,
              help="onnx, torchscript or openvino (an IR folder NAME.openvino; needs vqtool[openvino]); YOLO "
                   "weights also take Ultralytics' other formats (engine, coreml, ...) when their packages are "
                   "installed.")
@click.option("--opset", type=click.IntRange(7), default=DEFAULTS.opset, help="ONNX opset (default 17 for classifiers, "
                                                                   "Ultralytics' choice for YOLO).")
@click.option("--dynamic-batch/--static", default=DEFAULTS.dynamic_batch, show_default=True,
              help="Any batch size, or a fixed batch of 1 (for YOLO: also fixed image size).")
@click.option("--imgsz", type=click.IntRange(1), default=DEFAULTS.imgsz,
              help="Input side in pixels (default: the checkpoint's).")
@click.option("--half", is_flag=True, help="fp16 weights and compute (inputs and outputs stay float32).")
@click.option("-o", "--output", type=OutputPath(folder=None), default=DEFAULTS.output,
              help="Where to write (default: model.onnx / model.ts beside the checkpoint, or the weights' name "
                   "with the format's suffix beside YOLO weights); an existing file is refused without --overwrite.")
@overwrite_option
@click.option("--verify/--no-verify", default=DEFAULTS.verify, show_default=True,
              help="Compare the export with the original model afterwards; exit 1 beyond --tolerance.")
@click.option("--tolerance", type=FiniteFloat(0), default=DEFAULTS.tolerance,
              help="Largest max abs diff that passes: logits for classifiers (default 1e-4, 5e-2 with --half), "
                   "box corners in pixels for YOLO (default 0.05, 2 with --half).")
@click.option("--data", "sample_data", metavar="DATASET", default=DEFAULTS.sample_data,
              help="Real images to verify with (default: the checkpoint's held-out split; for YOLO, "
                   "Ultralytics' sample images).")
@click.option("--int8", is_flag=True,
              help="Classifiers, onnx or openvino: post-training int8 (ONNX Runtime static QDQ; OpenVINO NNCF), "
                   "calibrated on real images and judged by the accuracy lost on held-out ones.")
@click.option("--calibrate", metavar="DATASET", default=DEFAULTS.calibrate,
              help="--int8: images to calibrate with (default: the run's own training images).")
@click.option("--calibration-images", type=click.IntRange(1), default=DEFAULTS.calibration_images,
              show_default=True, help="--int8: how many calibration images (spread over the data).")
@click.option("--max-drop", type=FiniteFloat(0), default=DEFAULTS.max_drop, show_default=True, metavar="POINTS",
              help="--int8: accuracy points the export may lose against the checkpoint on held-out images; "
                   "beyond it the file is kept and the exit code is 1.")
@trust_pickle_option
@output_options
def export(checkpoint, fmt, opset, dynamic_batch, imgsz, half, output, overwrite, verify, tolerance, sample_data,
           int8, calibrate, calibration_images, max_drop, out):
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

    options = ExportOptions(format=fmt.lower(), output=Path(output) if output else None, opset=opset,
                            dynamic_batch=dynamic_batch, imgsz=imgsz, half=half, verify=verify,
                            tolerance=tolerance, sample_data=sample_data, overwrite=overwrite, int8=int8,
                            calibrate=calibrate, calibration_images=calibration_images, max_drop=max_drop)
    summary = export_model(checkpoint, options, out)
    print_summary(out, summary, title="export summary")
    check_verified(summary)
