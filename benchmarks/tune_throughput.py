"""`vqtool tune finetune` trials per minute: with the feature store, without it, and two workers on one study.

    python benchmarks/tune_throughput.py --data ../shared/assets/data/cats_vs_dogs \
        --weights ../shared/assets/weights/tf_efficientnet_lite0.in1k.safetensors [--seconds 120]

Every arm is the real command, in processes of its own, for --seconds of --budget, on a frozen backbone with a fixed
amount of work per trial (5 epochs, batch 32, a linear head; lr, weight decay and label smoothing searched, no
pruner), each arm a new study:

    store, cold     the store starts empty: the first trial pays the backbone's pass over every image
    store, warm     the pixels and features are already stored (what every trial after the first reads)
    no store        --no-cache-store: every trial decodes the images and runs the backbone again
    two workers     two processes on one SQLite study, store warm: does a second worker pay on this CPU?

Trials per minute count the trials that completed within the budget (the one the budget stopped is not counted).
The machine's load average is printed beside the figures: other processes share these cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ASSETS = Path(os.environ.get("VQTOOL_TEST_ASSETS") or Path(__file__).resolve().parents[1].parent / "shared" / "assets")
SPACE = "epochs: 5\nbatch_size: 32\nhead: linear\nfreeze: backbone\nlr: {low: 1.0e-4, high: 0.1, log: true}\n" \
        "weight_decay: {low: 1.0e-6, high: 0.1, log: true}\nlabel_smoothing: {low: 0.0, high: 0.2}\n"


def tune(args, folder: Path, cache: Path, seconds: float, study: str, extra=(), workers: int = 1) -> dict:
    """Run `workers` tune processes on one study for `seconds`; trials completed, wall time, trials per minute."""
    env = {**os.environ, "VQTOOL_CACHE_DIR": str(cache), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "vqtool", "tune", "finetune", str(args.data), "--model", args.model,
               "--weights", str(args.weights), "--space", str(folder / "space.yaml"), "--pruner", "none",
               "--budget", f"{seconds}s", "--study", study, "--storage", f"sqlite:///{folder / (study + '.db')}",
               "--json", "-q", *extra]
    started = time.perf_counter()
    processes = [subprocess.Popen([*command, "--out", str(folder / f"{study}-{i}")], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(workers)]
    outputs = [process.communicate() for process in processes]
    wall = time.perf_counter() - started
    for process, (stdout, stderr) in zip(processes, outputs):
        if process.returncode != 0:
            sys.exit(f"{study}: exit {process.returncode}\n{stderr[-2000:]}")
    last = json.loads(outputs[-1][0])
    complete = last["trials"]["complete"]
    return {"trials": complete, "wall_s": round(wall, 1), "trials_per_minute": round(60 * complete / wall, 2),
            "best": round(last["best"]["value"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ASSETS / "data" / "cats_vs_dogs")
    parser.add_argument("--weights", type=Path, default=ASSETS / "weights" / "tf_efficientnet_lite0.in1k.safetensors")
    parser.add_argument("--model", default="timm/tf_efficientnet_lite0")
    parser.add_argument("--seconds", type=float, default=120, help="--budget of each arm")
    args = parser.parse_args()
    from vqtool.compute.cpu import cpu_features

    with tempfile.TemporaryDirectory(prefix="tune-throughput-") as temporary:
        folder = Path(temporary)
        (folder / "space.yaml").write_text(SPACE)
        store, empty = folder / "store", folder / "empty"
        arms = {"store, cold": lambda: tune(args, folder, store, args.seconds, "cold"),
                "store, warm": lambda: tune(args, folder, store, args.seconds, "warm"),
                "no store": lambda: tune(args, folder, empty, args.seconds, "nostore", ("--no-cache-store",)),
                "two workers, store warm": lambda: tune(args, folder, store, args.seconds, "two", workers=2)}
        results = {}
        for name, arm in arms.items():
            load = os.getloadavg()[0]
            results[name] = {**arm(), "load_before": round(load, 1)}
            print(f"{name:26s} {results[name]['trials']:4d} trials in {results[name]['wall_s']:6.1f} s = "
                  f"{results[name]['trials_per_minute']:6.2f} trials/min (best val_top1 {results[name]['best']}, "
                  f"load average {load:.1f})", flush=True)
    print(f"{args.data.name}, {args.model}, frozen backbone, 5 epochs per trial; {cpu_features().describe()}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
