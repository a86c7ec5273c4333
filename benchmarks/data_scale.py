"""Data beyond memory: the pixel store against the in-memory path, at growing numbers of photos.

    python benchmarks/data_scale.py [--sizes 2000 10000 [50000]] [--imgsz 224] [--work /tmp/data_scale]

For each N it makes (once, under --work) a folder of N real-looking JPEG photos
from the shared assets: random crops and flips of cats_vs_dogs and upscaled
Fashion-MNIST items, about 320 px on the shorter side. Then, each command in a
process of its own with an empty store at first:

  first run    vqtool train (--epochs 1): decodes into the store. Decode images/s (the store's log line), seconds
               until the first training step (the "training ..." line, printed just before it) and epoch images/s
  second run   the same command: seconds until the first training step (stopped there), and the ratio to the first
  in memory    the same with --no-cache-store (where N fits in its 6 GB): epoch images/s, and the store's ratio to it

with each process's peak RSS (--no-epochs stops the first run at its first step too: decoding, start-up and memory
only, for machines where an epoch at 224 px takes too long). Goals: the second run reaches its first step >= 20x
sooner, epoch throughput >= 0.9x the in-memory path, peak RSS flat in N.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "data"
MEMORY_BUDGET = 6 * 1024**3


def make_photos(root: Path, n: int, seed: int = 0) -> Path:
    """N JPEG photos in class folders: crops and flips of cats_vs_dogs, Fashion-MNIST items upscaled."""
    folder = root / f"photos-{n}"
    if (folder / ".complete").is_file():
        return folder
    rng = np.random.default_rng(seed)
    sources = [(p.parent.name, Image.open(p).convert("RGB")) for p in sorted((ASSETS / "cats_vs_dogs").rglob("*.jpg"))]
    with gzip.open(ASSETS / "fashion-mnist" / "train-images-idx3-ubyte.gz") as f:
        items = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    for i in range(n):
        if i % 2 == 0:
            label, image = sources[rng.integers(len(sources))]
            w, h = image.size
            scale = rng.uniform(0.6, 1.0)
            cw, ch = int(w * scale), int(h * scale)
            left, top = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            photo = image.crop((left, top, left + cw, top + ch))
        else:
            label = "fashion"
            photo = Image.fromarray(items[rng.integers(len(items))]).convert("RGB").resize((336, 336), Image.BICUBIC)
        if rng.random() < 0.5:
            photo = ImageOps.mirror(photo)
        short = 320 / min(photo.size)
        photo = photo.resize((max(1, round(photo.size[0] * short)), max(1, round(photo.size[1] * short))))
        (folder / label).mkdir(parents=True, exist_ok=True)
        photo.save(folder / label / f"{i:06d}.jpg", quality=90)
    (folder / ".complete").write_text("")
    return folder


def run(args: list[str], env: dict, stop_at_first_step: bool = False) -> dict:
    """One vqtool process: seconds to the first training step, the log lines, the summary and the peak RSS."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "vqtool", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    first_step, logs = None, []
    for line in process.stderr:
        logs.append(line.rstrip())
        if first_step is None and line.startswith("training "):
            first_step = time.perf_counter() - started
            if stop_at_first_step:
                process.kill()
                break
    stdout = process.stdout.read()
    _, _, usage = os.wait4(process.pid, 0)
    summary = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() and not stop_at_first_step else {}
    if not stop_at_first_step and not summary:
        raise SystemExit("\n".join(logs[-10:]))
    return {"first_step_s": first_step, "logs": logs, "summary": summary, "peak_rss_gb": usage.ru_maxrss / 1024**2}


def decode_rate(logs: list[str]) -> float | None:
    rates = [float(m.group(1)) for line in logs if (m := re.search(r"store: decoded .* ([\d.]+) images/s", line))]
    return rates[0] if rates else None


def measure(n: int, args, work: Path) -> dict:
    photos = make_photos(work, n)
    store = work / f"store-{n}"
    subprocess.run(["rm", "-rf", str(store)], check=True)
    env = {**os.environ, "VQTOOL_CACHE_DIR": str(store), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = ["train", str(photos), "--model", args.model, "--imgsz", str(args.imgsz), "--epochs", "1",
               "--val-split", "0", "--batch-size", "64", "--json", "--out", str(work / f"run-{n}-{time.time_ns()}")]
    first = run(command, env, stop_at_first_step=args.no_epochs)
    command[-1] = str(work / f"run-{n}-{time.time_ns()}")
    second = run(command, env, stop_at_first_step=True)
    row = {"n": n, "decode_images_per_s": decode_rate(first["logs"]), "first_run_first_step_s": first["first_step_s"],
           "second_run_first_step_s": second["first_step_s"],
           "first_step_speedup": first["first_step_s"] / second["first_step_s"],
           "first_run_peak_rss_gb": first["peak_rss_gb"], "second_run_peak_rss_gb": second["peak_rss_gb"]}
    if args.no_epochs:
        return row
    row["store_epoch_images_per_s"] = first["summary"]["images_per_second"]
    if n * 3 * args.imgsz**2 <= MEMORY_BUDGET:
        command[-1] = str(work / f"run-{n}-{time.time_ns()}")
        memory = run([*command, "--no-cache-store"], env)
        row.update(memory_epoch_images_per_s=memory["summary"]["images_per_second"],
                   memory_peak_rss_gb=memory["peak_rss_gb"],
                   store_vs_memory_epoch=first["summary"]["images_per_second"] / memory["summary"]["images_per_second"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--imgsz", type=int, default=224)
    parser.add_argument("--model", default="cnn-bn")
    parser.add_argument("--work", type=Path, default=Path("/tmp/data_scale"))
    parser.add_argument("--no-epochs", action="store_true",
                        help="Stop every run at its first step: decoding, start-up and peak RSS only (no epoch rates).")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        rows.append(measure(n, args, args.work))
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
    if len(rows) > 1:
        growth = rows[-1]["first_run_peak_rss_gb"] - rows[0]["first_run_peak_rss_gb"]
        print(f"peak RSS growth from N={rows[0]['n']} to N={rows[-1]['n']}: {growth:+.2f} GB (goal: within 1.5 GB)")


if __name__ == "__main__":
    main()
