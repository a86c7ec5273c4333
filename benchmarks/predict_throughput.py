"""Classifying a folder of photos: a timm/tutorial-style inference loop vs `vqtool predict` (checkpoint and .onnx).

    python benchmarks/predict_throughput.py --data ../shared/assets/data/cats_vs_dogs \
        --weights ../shared/assets/weights/tf_efficientnet_lite0.in1k.safetensors

Set-up (not timed): `vqtool finetune --freeze backbone` makes an EfficientNet-Lite0
cats-vs-dogs checkpoint (1 epoch), and `vqtool export` its .onnx. Then every photo
under --data goes through three processes, each timed from start to exit (imports,
model loading and decoding included):

- the loop timm's inference.py and the PyTorch tutorials write: a Dataset opening
  each file with PIL and applying the checkpoint's per-image transforms (Resize,
  CenterCrop, ToTensor, Normalize, from torchvision), a DataLoader with 2 workers and
  batch 32, the same weights in a timm model, ``torch.no_grad``, argmax;
- ``vqtool predict DATA -w RUN`` (JSON Lines to a pipe);
- ``vqtool predict DATA -w model.onnx``.

Prints images/s for each, the ratios to the loop (goal >= 1.5x) and the share of
photos whose top-1 label equals the loop's (goal >= 99.5 %).
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
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def photos(data: Path) -> list[str]:
    return sorted(str(p) for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def loop_labels(run: Path, data: Path) -> dict[str, str]:
    """The plain loop: {path: top-1 class}."""
    import timm
    import torch
    from PIL import Image
    from safetensors.torch import load_file
    from torchvision import transforms

    meta = json.loads((run / "model.json").read_text())
    preprocess = meta["preprocess"]
    model = timm.create_model(meta["architecture"].removeprefix("timm/"), num_classes=meta["num_classes"])
    model.load_state_dict(load_file(str(run / "model.safetensors")))
    model.eval()
    interpolation = getattr(transforms.InterpolationMode, preprocess["interpolation"].upper())
    transform = transforms.Compose([transforms.Resize(preprocess["resize"] or preprocess["size"], interpolation),
                                    transforms.CenterCrop(preprocess["size"]), transforms.ToTensor(),
                                    transforms.Normalize(preprocess["mean"], preprocess["std"])])

    class Photos(torch.utils.data.Dataset):
        def __init__(self, files):
            self.files = files

        def __len__(self):
            return len(self.files)

        def __getitem__(self, index):
            with Image.open(self.files[index]) as image:
                return transform(image.convert("RGB"))

    files = photos(data)
    loader = torch.utils.data.DataLoader(Photos(files), batch_size=32, num_workers=2)
    labels = []
    with torch.no_grad():
        for batch in loader:
            labels += model(batch).argmax(1).tolist()
    return {path: meta["classes"][label] for path, label in zip(files, labels)}


def timed(command: list[str], what: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{what} failed: {result.stderr.strip()[-2000:]}")
    return seconds, result.stdout


def vqtool(*args: str) -> list[str]:
    return [sys.executable, "-m", "vqtool", *args]


def make_checkpoint(data: Path, weights: Path, folder: Path) -> tuple[Path, Path]:
    run, onnx = folder / "run", folder / "model.onnx"
    timed(vqtool("finetune", str(data), "--model", "timm/tf_efficientnet_lite0", "--weights", str(weights),
                 "--freeze", "backbone", "--epochs", "1", "-q", "--json", "--out", str(run)), "vqtool finetune")
    timed(vqtool("export", str(run), "--format", "onnx", "-o", str(onnx), "-q", "--json"), "vqtool export")
    return run, onnx


def report(name: str, seconds: float, labels: dict[str, str], baseline: tuple[float, dict[str, str]] | None) -> None:
    rate = len(labels) / seconds
    line = f"{name:<24} {seconds:7.1f} s  {rate:6.1f} img/s"
    if baseline is not None:
        base_seconds, base_labels = baseline
        same = sum(labels.get(path) == label for path, label in base_labels.items()) / len(base_labels)
        line += f"  {base_seconds / seconds:.2f}x the loop (goal >= 1.5x)  identical top-1 {100 * same:.1f} %"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ASSETS / "data" / "cats_vs_dogs")
    parser.add_argument("--weights", type=Path, default=ASSETS / "weights" / "tf_efficientnet_lite0.in1k.safetensors")
    parser.add_argument("--loop-only", type=Path, help=argparse.SUPPRESS)  # the loop's own process: the run folder
    args = parser.parse_args()
    if args.loop_only:
        print(json.dumps(loop_labels(args.loop_only, args.data)))
        return
    for path in (args.data, args.weights):
        if not path.exists():
            sys.exit(f"{path} not found: pass --data and --weights")
    with tempfile.TemporaryDirectory() as folder:
        run, onnx = make_checkpoint(args.data, args.weights, Path(folder))
        print(f"{len(photos(args.data))} photos under {args.data}")
        seconds, out = timed([sys.executable, __file__, "--data", str(args.data), "--loop-only", str(run)], "the loop")
        loop = (seconds, json.loads(out))
        report("timm-style loop", *loop, None)
        for name, weights in (("vqtool predict (run)", run), ("vqtool predict (.onnx)", onnx)):
            seconds, out = timed(vqtool("predict", str(args.data), "-w", str(weights), "-q"), name)
            labels = {record["path"]: record["class"] for record in map(json.loads, out.splitlines())}
            report(name, seconds, labels, loop)


if __name__ == "__main__":
    main()
