"""How long answers that need no model take: listings, --help and usage errors, against importing torch.

    python benchmarks/startup.py [--repeat 5] [--source DIR ...]

Each command runs as a fresh process (as a shell runs it) and the median wall time
of --repeat runs is printed, beside the baseline `python -c 'import torch'` measured
in the same run: what every answer cost when it imported torch first. Goal: each well
under a second. --source runs vqtool from other checkouts too (e.g. the main branch, for
a before/after table), one column each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "vqtool models": ["-m", "vqtool", "models"],
    "vqtool datasets": ["-m", "vqtool", "datasets"],
    "vqtool plugins": ["-m", "vqtool", "plugins"],
    "vqtool --help": ["-m", "vqtool", "--help"],
    "train --out EXISTING (usage error)": ["-m", "vqtool", "train", "--out", "{existing}"],
    "finetune --unfreeze-at 9 --epochs 2 (usage error)": ["-m", "vqtool", "finetune", "--unfreeze-at", "9",
                                                          "--epochs", "2"],
    "eval missing (usage error)": ["-m", "vqtool", "eval", "missing"],
}
BASELINE = ("python -c 'import torch' (baseline)", ["-c", "import torch"])


def seconds(arguments: list[str], source: Path, repeat: int, folder: str) -> float:
    """Median wall time of running ``python ARGUMENTS`` with ``source`` first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])}
    arguments = [a.format(existing=os.path.join(folder, "existing")) for a in arguments]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, *arguments], env=env, cwd=folder, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--source", type=Path, action="append", default=[],
                        help="Another checkout to time (e.g. ../main); this one is always timed.")
    args = parser.parse_args()
    sources = [ROOT, *args.source]
    with tempfile.TemporaryDirectory() as folder:
        os.makedirs(os.path.join(folder, "existing"))
        Path(folder, "existing", "file").write_text("taken")
        baseline = seconds(BASELINE[1], ROOT, args.repeat, folder)
        header = "".join(f"{str(source):>26}" for source in sources)
        print(f"{'command':<52}{header}  (median of {args.repeat}, seconds)")
        print(f"{BASELINE[0]:<52}{baseline:>26.2f}")
        for name, arguments in COMMANDS.items():
            figures = [seconds(arguments, source, args.repeat, folder) for source in sources]
            cells = "".join(f"{value:>17.2f} ({value / baseline:.2f}x)" for value in figures)
            print(f"{name:<52}{cells}")
    print("(x: the time as a multiple of the baseline)")


if __name__ == "__main__":
    main()
