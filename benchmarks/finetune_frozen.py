"""Frozen-backbone fine-tuning: the transfer-learning tutorial's loop vs `vqtool finetune --freeze backbone`.

    python benchmarks/finetune_frozen.py --data ../shared/assets/data/cats_vs_dogs \
        --weights ../shared/assets/weights/tf_efficientnet_lite0.in1k.safetensors [--epochs 5]

The plain loop is PyTorch's transfer-learning tutorial ("ConvNet as fixed feature
extractor"): ImageFolder, RandomResizedCrop + flip for training, Resize +
CenterCrop for validation, DataLoader batch 4, every backbone parameter frozen,
a new linear head, SGD lr 1e-3 momentum 0.9, StepLR(7, 0.1), validation every
epoch. Both start from the same weights (timm layout) and run the same epochs,
each in a process of its own, timed from start to exit (imports, decoding and
model building included), so neither inherits the other's threads or memory.
Prints wall time and final val accuracy for both and the speed ratio
(goal: vqtool >= 5x faster at >= the same accuracy).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"


def plain_loop(data: Path, weights: Path, architecture: str, epochs: int, seed: int) -> dict:
    import timm
    from safetensors.torch import load_file
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    model = timm.create_model(architecture)
    model.load_state_dict(load_file(str(weights)))
    config = timm.data.resolve_data_config(model=model)
    normalize = transforms.Normalize(config["mean"], config["std"])
    size = config["input_size"][-1]
    train_transform = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                          transforms.ToTensor(), normalize])
    val_transform = transforms.Compose([transforms.Resize(int(size / config["crop_pct"])),
                                        transforms.CenterCrop(size), transforms.ToTensor(), normalize])
    loaders = {"train": torch.utils.data.DataLoader(datasets.ImageFolder(data / "train", train_transform),
                                                    batch_size=4, shuffle=True),
               "val": torch.utils.data.DataLoader(datasets.ImageFolder(data / "val", val_transform), batch_size=4)}
    for parameter in model.parameters():
        parameter.requires_grad = False
    model.reset_classifier(len(loaders["train"].dataset.classes))  # new head: trainable
    optimizer = torch.optim.SGD(model.get_classifier().parameters(), lr=1e-3, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    loss_fn = nn.CrossEntropyLoss()
    accuracy = 0.0
    for _ in range(epochs):
        model.train()
        for images, labels in loaders["train"]:
            optimizer.zero_grad()
            loss_fn(model(images), labels).backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in loaders["val"]:
                correct += (model(images).argmax(1) == labels).sum().item()
        accuracy = correct / len(loaders["val"].dataset)
    return {"val_top1": accuracy}


def timed_process(command: list[str], what: str) -> dict:
    """The JSON document ``command`` prints, with the process's wall time added as ``seconds``."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{what} failed: {result.stderr.strip()}")
    return {**json.loads(result.stdout), "seconds": seconds}


def vqtool_finetune(data: Path, weights: Path, architecture: str, epochs: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        return timed_process([sys.executable, "-m", "vqtool", "finetune", str(data), "--model", f"timm/{architecture}",
                              "--weights", str(weights), "--freeze", "backbone", "--epochs", str(epochs),
                              "--seed", str(seed), "--json", "-q", "--out", str(Path(folder) / "run")],
                             "vqtool finetune")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ASSETS / "data" / "cats_vs_dogs")
    parser.add_argument("--weights", type=Path, default=ASSETS / "weights" / "tf_efficientnet_lite0.in1k.safetensors")
    parser.add_argument("--architecture", default="tf_efficientnet_lite0", help="timm name the weights fit")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)  # the plain loop's own process
    args = parser.parse_args()
    if args.plain_only:
        print(json.dumps(plain_loop(args.data, args.weights, args.architecture, args.epochs, args.seed)))
        return
    for path in (args.data / "train", args.data / "val", args.weights):
        if not path.exists():
            sys.exit(f"{path} not found: pass --data (with train/ and val/) and --weights")
    plain = timed_process([sys.executable, __file__, "--plain-only", "--data", str(args.data), "--weights",
                           str(args.weights), "--architecture", args.architecture, "--epochs", str(args.epochs),
                           "--seed", str(args.seed)], "the plain loop")
    print(f"plain loop       {plain['seconds']:8.1f} s   val acc {plain['val_top1']:.4f}")
    ours = vqtool_finetune(args.data, args.weights, args.architecture, args.epochs, args.seed)
    print(f"vqtool finetune  {ours['seconds']:8.1f} s   val acc {ours['val_top1']:.4f}")
    print(f"speed-up {plain['seconds'] / ours['seconds']:.2f}x (goal >= 5x), "
          f"accuracy {ours['val_top1'] - plain['val_top1']:+.4f} vs the plain loop")


if __name__ == "__main__":
    main()
