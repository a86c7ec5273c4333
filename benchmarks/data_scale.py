"""Memory flat in the number of images: every command that reads a whole dataset, to completion, at three sizes.

    python benchmarks/data_scale.py [--sizes 2000 6000 18000] [--imgsz 224] [--model M --weights W] [--no-unfrozen]

For each N it makes (once, under --work) a folder of N real-looking JPEG photos
from the shared assets: random crops and flips of cats_vs_dogs and upscaled
Fashion-MNIST items, about 320 px on the shorter side. Then, each command in a
process of its own, run to its end, with a store that starts empty for each N:
train (cnn-bn, one epoch), finetune with the backbone frozen (the feature pass,
then one epoch of the head), the same again (store and features reused),
finetune unfrozen (one epoch), eval and predict of the frozen run over all the
photos. It prints each process's peak RSS and seconds, a table of peak RSS per
command and N, and checks the goal: the largest N's peak within --tolerance
(15 %) of the smallest's for every command (exit 1 otherwise). It also prints
how much sooner the second frozen fine-tune finishes, and both runs' val
accuracy.

Use sizes of at least 1,500: below that the validation split (a tenth to a
fifth) is smaller than one evaluation batch (256), so the smaller runs peak
lower for a reason that has nothing to do with the number of images.
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
LITE0 = ASSETS.parent / "weights" / "tf_efficientnet_lite0.in1k.safetensors"


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


def run(args: list[str], env: dict) -> dict:
    """One vqtool process to completion: its seconds, peak RSS (the kernel's figure for that process) and the log."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "vqtool", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=env)
    logs = [line.rstrip() for line in process.stderr]
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"vqtool {' '.join(args)} failed:\n" + "\n".join(logs[-10:]))
    return {"seconds": time.perf_counter() - started, "peak_rss_gb": usage.ru_maxrss / 1024**2, "logs": logs}


def accuracy(logs: list[str]) -> float | None:
    """The last epoch's val accuracy from the epoch log lines."""
    found = [float(m.group(1)) for line in logs if (m := re.search(r"^epoch .* val loss \S+ acc ([\d.]+)", line))]
    return found[-1] if found else None


def commands(photos: Path, run: Path, args) -> dict[str, list[str]]:
    """Each command that reads every image, to completion (the train split is 90 % of the photos)."""
    size = ["--imgsz", str(args.imgsz)]
    backbone = ["--model", args.model, *(["--weights", str(args.weights)] if args.weights else [])]
    return {
        "train (1 epoch)": ["train", str(photos), "--model", "cnn-bn", *size, "--epochs", "1", "--out", str(run / "t")],
        "finetune frozen": ["finetune", str(photos), *backbone, *size, "--freeze", "backbone", "--epochs", "1",
                            "--out", str(run / "f")],
        "finetune frozen, again": ["finetune", str(photos), *backbone, *size, "--freeze", "backbone", "--epochs", "1",
                                   "--out", str(run / "f2")],
        "finetune unfrozen (1 epoch)": ["finetune", str(photos), *backbone, *size, "--freeze", "none", "--epochs", "1",
                                        "--out", str(run / "u")],
        "eval": ["eval", str(run / "f"), str(photos)],
        "predict": ["predict", str(photos), "-w", str(run / "f"), "--format", "csv"],
    }


def measure(n: int, args) -> dict[str, dict]:
    photos = make_photos(args.work, n)
    store, run_root = args.work / f"store-{n}", args.work / f"runs-{n}-{time.time_ns()}"
    subprocess.run(["rm", "-rf", str(store)], check=True)
    env = {**os.environ, "VQTOOL_CACHE_DIR": str(store), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    results = {}
    for name, command in commands(photos, run_root, args).items():
        if name.startswith("finetune unfrozen") and args.no_unfrozen:
            continue
        result = run(command, env)
        results[name] = {"seconds": round(result["seconds"], 1), "peak_rss_gb": round(result["peak_rss_gb"], 3),
                         "val_top1": accuracy(result["logs"])}
        print(json.dumps({"images": n, "command": name, **results[name]}), flush=True)
    return results


def report(by_size: dict[int, dict[str, dict]], tolerance: float) -> bool:
    """The table of peak RSS per command and size; whether every command is flat in N (within ``tolerance``)."""
    sizes = sorted(by_size)
    print(f"\npeak RSS (GB) per command and number of photos; goal: the largest within {tolerance:.0%} of the smallest")
    print(f"| command | {' | '.join(f'{n:,}' for n in sizes)} | change | flat |")
    print(f"|---|{'---|' * len(sizes)}---|---|")
    flat = True
    for name in by_size[sizes[0]]:
        peaks = [by_size[n][name]["peak_rss_gb"] for n in sizes]
        change = peaks[-1] / peaks[0] - 1
        flat &= abs(change) <= tolerance
        print(f"| {name} | {' | '.join(f'{p:.2f}' for p in peaks)} | {change:+.1%} | "
              f"{'yes' if abs(change) <= tolerance else 'NO'} |")
    for n in sizes:
        first, again = by_size[n]["finetune frozen"], by_size[n]["finetune frozen, again"]
        print(f"{n:,} photos: frozen fine-tune {first['seconds']} s, again (store and features reused) "
              f"{again['seconds']} s: {first['seconds'] / again['seconds']:.1f}x sooner; val top-1 "
              f"{first['val_top1']} and {again['val_top1']}")
    return flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 6000, 18000])
    parser.add_argument("--imgsz", type=int, default=224)
    parser.add_argument("--model", default="timm/tf_efficientnet_lite0")
    parser.add_argument("--weights", type=Path, default=LITE0 if LITE0.is_file() else None,
                        help="Backbone weights (default: the shared Lite0 file where it exists; else random).")
    parser.add_argument("--tolerance", type=float, default=0.15, help="Allowed change of peak RSS across sizes.")
    parser.add_argument("--no-unfrozen", action="store_true", help="Leave out the unfrozen fine-tune (the slowest).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/data_scale"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"CPU features: {cpu_features()}; {os.cpu_count()} cores", flush=True)
    by_size = {n: measure(n, args) for n in args.sizes}
    sys.exit(0 if report(by_size, args.tolerance) else 1)


def cpu_features() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return " ".join(flag for flag in wanted if flag in flags) or "unknown"


if __name__ == "__main__":
    main()
