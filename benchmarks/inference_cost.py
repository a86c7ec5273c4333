"""What `vqtool eval` and `vqtool predict --cam` cost: wall time and peak memory of the whole process.

    python benchmarks/inference_cost.py --run RUN --images DIR [--source OTHER_CHECKOUT ...] [--skip-cam]

RUN is a classifier's run folder, DIR the images to evaluate and explain (a folder of class folders, as eval
reads it). Each command runs as a fresh process (as a shell runs it), from this checkout and from each
--source (e.g. the commit before a change), one row each; the baseline row is importing what every model
command imports (torch, torchvision, timm) and nothing else. Peak memory is the process's maximum resident
set size (os.wait4).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(arguments: list[str], source: Path, folder: str) -> tuple[float, float, str]:
    """(seconds, peak RSS in GB, stderr) of ``python ARGUMENTS`` with ``source`` first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *arguments], env=env, cwd=folder, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(arguments)} failed:\n{stderr[-2000:]}")
    return seconds, usage.ru_maxrss / 1024**2, stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="A classifier's run folder.")
    parser.add_argument("--images", type=Path, required=True, help="A folder of class folders.")
    parser.add_argument("--skip-cam", action="store_true", help="Time eval only.")
    parser.add_argument("--source", type=Path, action="append", default=[],
                        help="Another checkout to time (e.g. the commit before a change); this one is always timed.")
    args = parser.parse_args()
    run_dir, images = args.run.resolve(), args.images.resolve()
    count = sum(1 for path in images.rglob("*") if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        seconds, peak, _ = run(["-c", "import torch, torchvision, timm"], ROOT, folder)
        rows.append(("import torch, torchvision, timm (baseline)", "-", seconds, peak, ""))
        for source in [ROOT, *args.source]:
            name = "this checkout" if source == ROOT else str(source)
            run(["-m", "vqtool", "eval", str(run_dir), str(images), "-q", "--json"], source, folder)  # the store
            seconds, peak, _ = run(["-m", "vqtool", "eval", str(run_dir), str(images), "-q", "--json"], source,
                                   folder)
            rows.append((f"eval ({count} images, already decoded)", name, seconds, peak, ""))
            if args.skip_cam:
                continue
            cams = tempfile.mkdtemp(dir=folder)
            seconds, peak, stderr = run(["-m", "vqtool", "predict", str(images), "-w", str(run_dir), "--cam", cams],
                                        source, folder)
            per_image = re.search(r"([\d.]+) ms per image", stderr)
            rows.append((f"predict --cam ({count} images)", name, seconds, peak,
                         f"{per_image.group(1)} ms per image" if per_image else ""))
    print(f"{'command':<44} {'vqtool from':<22} {'seconds':>8} {'peak GB':>8}  per image")
    for command, name, seconds, peak, note in rows:
        print(f"{command:<44} {name:<22} {seconds:>8.1f} {peak:>8.2f}  {note}")


if __name__ == "__main__":
    main()
