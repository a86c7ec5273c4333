"""Lite0 and ResNet-18 on cats vs dogs in every runtime: model alone (`vqtool benchmark`) and whole `vqtool predict`.

    python benchmarks/cpu_formats.py --data ../shared/assets/data/cats_vs_dogs \
        --weights ../shared/assets/weights/tf_efficientnet_lite0.in1k.safetensors

Set-up (not timed): EfficientNet-Lite0 fine-tuned from the local ImageNet weights
(`vqtool finetune --freeze backbone`, 1 epoch) and ResNet-18 trained 1 epoch from
scratch (no ResNet-18 weights can be downloaded here, so its accuracy is near
chance; its speed is what is measured), both at 224 px; then each run is exported
to TorchScript, ONNX, ONNX int8, OpenVINO and OpenVINO int8.

Measured, in one process per figure and in this order, with the CPU's features printed first:
- model only: `vqtool benchmark RUN DATA --batch 1,32 --json` (latency at batch 1, img/s at 1 and 32,
  accuracy and agreement with the checkpoint on DATA's val split);
- whole process: `vqtool predict` over every photo of DATA --repeat times (start-up, decoding and
  output included), img/s and the accuracy of its top-1 against the class folder names.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
EXPORTS = {"torchscript": ("--format", "torchscript", "-o", "model.ts"),
           "onnx": ("--format", "onnx", "-o", "model.onnx"),
           "onnx-int8": ("--format", "onnx", "--int8", "-o", "model.int8.onnx"),
           "openvino": ("--format", "openvino", "-o", "model.openvino"),
           "openvino-int8": ("--format", "openvino", "--int8", "-o", "model.int8.openvino")}


def vqtool(*args: str) -> list[str]:
    return [sys.executable, "-m", "vqtool", *map(str, args)]


def run(command: list[str], what: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{what} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return seconds, result.stdout


MODELS = ("Lite0", "ResNet-18")


def make_run(name: str, data: Path, weights: Path, folder: Path) -> Path:
    if name == "Lite0":
        run(vqtool("finetune", data, "--model", "timm/tf_efficientnet_lite0", "--weights", weights, "--freeze",
                   "backbone", "--epochs", "1", "-q", "--json", "--out", folder / "lite0"), "finetune Lite0")
        return folder / "lite0"
    run(vqtool("train", data, "--model", "resnet18", "--imgsz", "224", "--epochs", "1", "--batch-size", "32", "-q",
               "--json", "--out", folder / "resnet18"), "train ResNet-18")
    return folder / "resnet18"


def model_only(name: str, checkpoint: Path, data: Path, seconds: float) -> None:
    _, out = run(vqtool("benchmark", checkpoint, data, "--batch", "1,32", "--seconds", seconds, "--json", "-q"),
                 f"benchmark {name}")
    report = json.loads(out)
    print(f"\n{name}, model only, on {report['dataset']} ({report['cpu']['summary']})")
    print(f"{'format':<15} {'b1 ms':>8} {'b1 p90':>8} {'b1 img/s':>9} {'b32 img/s':>10} {'accuracy':>9} {'agree':>7}")
    for row in report["formats"]:
        print(f"{row['format']:<15} {row['batch1_ms_median']:>8.2f} {row['batch1_ms_p90']:>8.2f} "
              f"{row['batch1_images_per_second']:>9.1f} {row['batch32_images_per_second']:>10.1f} "
              f"{row['accuracy']:>9.4f} {row['agreement']:>7.4f}{'  fastest' if row['fastest'] else ''}")
    for skipped in report["skipped"]:
        print(f"skipped {skipped['format']}: {skipped['reason']}")


def whole_process(name: str, checkpoint: Path, data: Path, repeat: int, folder: Path) -> None:
    files = {"checkpoint": checkpoint}
    for fmt, args in EXPORTS.items():
        target = folder / f"{checkpoint.name}-{args[-1]}"
        run(vqtool("export", checkpoint, *args[:-1], target, "-q", "--json"), f"export {name} {fmt}")
        files[fmt] = target
    print(f"\n{name}, whole-process `vqtool predict` of {repeat} x the photos under {data}")
    for fmt, weights in files.items():
        seconds, out = run(vqtool("predict", *[data] * repeat, "-w", weights, "-q", "--format", "jsonl"),
                           f"predict {name} {fmt}")
        records = [json.loads(line) for line in out.splitlines()]
        correct = sum(Path(r["path"]).parent.name == r["class"] for r in records)  # class folders
        print(f"{fmt:<15} {len(records):>5} images {seconds:>7.1f} s {len(records) / seconds:>7.1f} img/s  "
              f"accuracy {correct / len(records):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ASSETS / "data" / "cats_vs_dogs")
    parser.add_argument("--weights", type=Path, default=ASSETS / "weights" / "tf_efficientnet_lite0.in1k.safetensors")
    parser.add_argument("--seconds", type=float, default=3.0, help="vqtool benchmark --seconds")
    parser.add_argument("--repeat", type=int, default=2, help="predict goes over the photos this many times")
    parser.add_argument("--models", default=",".join(MODELS), help=f"a comma-separated subset of {', '.join(MODELS)}")
    args = parser.parse_args()
    for path in (args.data, args.weights):
        if not path.exists():
            sys.exit(f"{path} not found: pass --data and --weights")
    from vqtool.compute.cpu import cpu_features

    print(f"CPU features: {cpu_features(with_openvino=True).describe()}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            if name not in MODELS:
                sys.exit(f"--models: {name} is not one of {', '.join(MODELS)}")
            checkpoint = make_run(name, args.data, args.weights, Path(folder))
            model_only(name, checkpoint, args.data, args.seconds)
            whole_process(name, checkpoint, args.data, args.repeat, Path(folder))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
