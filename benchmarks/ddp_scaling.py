"""Data-parallel scaling: one process vs `torchrun --nproc_per_node=N` on the same training job.

    python benchmarks/ddp_scaling.py [--model resnet18] [--imgsz 64] [--images 512] [--epochs 2] [--procs 2]

Trains `--model` (large enough that compute dominates) on a generated
class-folder set of random-texture images, once in one process with the global
batch and once under torchrun with the batch split across the processes, and
prints the median epoch time of each (from the runs' metrics.csv) and the
speed-up. On CPU every process gets cores / N threads, so on a small machine
the honest figure can be near or below 1x: the cores are shared, not added.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(root: Path, count: int, size: int, classes: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for index in range(count):
        folder = root / f"class{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


def epoch_seconds(run: Path) -> float:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    return statistics.median(float(row["seconds"]) for row in rows)


def train(prefix: list[str], data: Path, run: Path, args, batch: int) -> float:
    command = [*prefix, "train", str(data), "--model", args.model, "--imgsz", str(args.imgsz), "--epochs",
               str(args.epochs), "--batch-size", str(batch), "--out", str(run), "-q", "--json"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return epoch_seconds(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch")
    parser.add_argument("--procs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = make_images(Path(folder) / "data", args.images, args.imgsz)
        single = train([sys.executable, "-m", "vqtool"], data, Path(folder) / "single", args, args.batch_size)
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.procs}",
                    "-m", "vqtool"]
        ddp = train(torchrun, data, Path(folder) / "ddp", args, args.batch_size // args.procs)
    print(f"{args.model} at {args.imgsz}px, {args.images} images, global batch {args.batch_size}, "
          f"{os.cpu_count()} CPU cores")
    print(f"1 process       {single:7.2f} s/epoch ({os.cpu_count()} threads)")
    print(f"{args.procs} processes     {ddp:7.2f} s/epoch ({max(1, (os.cpu_count() or 1) // args.procs)} "
          f"thread(s) each, gloo)")
    print(f"speed-up {single / ddp:.2f}x")


if __name__ == "__main__":
    main()
