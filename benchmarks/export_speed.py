"""CPU inference: eager PyTorch vs the ONNX export under onnxruntime, same model, same threads.

    python benchmarks/export_speed.py [CHECKPOINT] [--imgsz 224] [--batch 1 32] [--seconds 5]

Without CHECKPOINT the model is a randomly initialised torchvision resnet18 at
224 px (1000 classes); with one, the checkpoint's model at its own size. Prints
images/s for both at each batch size and the ratio onnxruntime / eager (goal:
>= 1.3x). Both use as many intra-op threads as the machine has cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

from vqtool.exporting import ExportOptions
from vqtool.reporter import SILENT
from vqtool.tasks import export
from vqtool.classification.export.formats import write_onnx


def eager_model(checkpoint: str | None) -> tuple[torch.nn.Module, int, int]:
    """(model, channels, side) in eval mode."""
    if checkpoint is None:
        from torchvision.models import resnet18

        return resnet18().eval(), 3, 224
    from vqtool.classification.checkpoints.format import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    return loaded.model.eval(), loaded.preprocess.channels, loaded.preprocess.size


def onnx_file(model, checkpoint: str | None, channels: int, side: int, folder: Path) -> Path:
    """The export as `vqtool export` writes it (dynamic batch, vqtool's opset and exporter)."""
    path = folder / "model.onnx"
    if checkpoint is None:
        write_onnx(model, torch.randn(2, channels, side, side), path, {"architecture": "resnet18"}, ExportOptions())
    else:
        export(checkpoint, ExportOptions(output=path, verify=False), SILENT)
    return path


def throughput(run, batch: int, seconds: float, warmup: int) -> float:
    """Images per second over at least ``seconds`` of timed calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < seconds:
        run()
        calls += 1
    return calls * batch / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="a vqtool run folder (default: random resnet18)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, channels, side = eager_model(args.checkpoint)
    with tempfile.TemporaryDirectory() as folder:
        path = onnx_file(model, args.checkpoint, channels, side, Path(folder))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} threads, "
          f"{args.checkpoint or 'resnet18 (random init)'} at {side} px")
    for batch in args.batch:
        images = torch.randn(batch, channels, side, side)
        array = images.numpy()
        with torch.inference_mode():
            eager = throughput(lambda: model(images), batch, args.seconds, args.warmup)
        ort = throughput(lambda: session.run(None, {name: array}), batch, args.seconds, args.warmup)
        print(f"batch {batch:>3}: eager {eager:8.1f} img/s   onnxruntime {ort:8.1f} img/s   "
              f"ratio (onnxruntime / eager): {ort / eager:.2f}x")


if __name__ == "__main__":
    main()
