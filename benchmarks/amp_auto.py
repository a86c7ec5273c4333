"""`--amp auto` (the default) against `--amp off` and a forced `--amp bf16`, side by side in one run.

    python benchmarks/amp_auto.py --data-dir ../shared/assets/data/fashion-mnist \
        --photos ../shared/assets/data/cats_vs_dogs --weights ../shared/assets/weights/tf_efficientnet_lite0.in1k.safetensors

Two jobs, each run to its end as a whole process in each mode, one after another:
- `vqtool train fashion-mnist --model cnn-bn` (60,000 images, --epochs);
- `vqtool finetune PHOTOS --model timm/tf_efficientnet_lite0 --freeze none` (unfrozen, 224 px, --epochs).
Prints, with the CPU's features first: which precision ran and why (the summary's `precision` and
`precision_reason`), training images/s, the job's seconds and its test (or val) accuracy; then auto's speed-up
over off. On a CPU without native bf16, auto trains in fp32 (a speed-up of 1.0 within noise) and forced bf16
shows what auto avoids.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = ("auto", "off", "bf16")


def job_commands(args) -> dict[str, list[str]]:
    jobs = {"fashion-mnist cnn-bn": ["train", "fashion-mnist", "--data-dir", args.data_dir, "--model", "cnn-bn",
                                     "--epochs", str(args.epochs)]}
    if args.photos and args.weights:
        jobs["Lite0 unfrozen"] = ["finetune", args.photos, "--model", "timm/tf_efficientnet_lite0", "--weights",
                                  args.weights, "--freeze", "none", "--epochs", str(args.epochs)]
    return jobs


def run(command: list[str], mode: str, folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "vqtool", *command, "--amp", mode, "--json", "-q",
                          "--out", str(folder / f"{command[0]}-{mode}")], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"vqtool {' '.join(command)} --amp {mode} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="where the Fashion-MNIST IDX files are")
    parser.add_argument("--photos", help="a class-folder dataset for the unfrozen Lite0 fine-tune")
    parser.add_argument("--weights", help="Lite0 ImageNet weights (timm's layout)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES), help="which --amp modes, in order (auto and off at least)")
    args = parser.parse_args()

    from vqtool.compute.cpu import cpu_features

    print(cpu_features().describe(), flush=True)
    print("| job | --amp | ran in | why | train img/s | seconds | accuracy |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for job, command in job_commands(args).items():
            speed = {}
            for mode in args.modes.split(","):
                summary = run(command, mode, Path(root))
                speed[mode] = summary["images_per_second"]
                accuracy = summary.get("test_top1", summary.get("val_top1"))
                print(f"| {job} | {mode} | {summary['precision']} | {summary['precision_reason']} | "
                      f"{speed[mode]:.1f} | {summary['seconds']:.1f} | {accuracy:.4f} |", flush=True)
            print(f"| {job} | auto vs off | | | {speed['auto'] / speed['off']:.2f}x | | |", flush=True)


if __name__ == "__main__":
    main()
