"""Fashion-MNIST: the course's plain training loop vs `vqtool train`, same model, batch and optimizer.

    python benchmarks/train_fmnist.py --data-dir ../shared/assets/data/fashion-mnist [--epochs 3]

Prints training images/s and test accuracy for both, and the throughput ratio
(goal: vqtool >= 1.5x the plain loop at equal or better accuracy).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from vqtool.models.small import SmallCNN


def plain_loop(data_dir: Path, epochs: int, batch_size: int, seed: int) -> dict:
    """The tutorial loop: torchvision dataset, ToTensor + Normalize per image, DataLoader, Adam 1e-3."""
    from torchvision import datasets, transforms

    with tempfile.TemporaryDirectory() as root:
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for file in data_dir.glob("*-ubyte.gz"):  # torchvision reads the decompressed files
            (raw / file.stem).write_bytes(gzip.decompress(file.read_bytes()))
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
        train = datasets.FashionMNIST(root, train=True, transform=transform)
        test = datasets.FashionMNIST(root, train=False, transform=transform)
        torch.manual_seed(seed)
        model = SmallCNN(10, 1)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        loader = DataLoader(train, batch_size=batch_size, shuffle=True)
        started = time.perf_counter()
        seen = 0
        for _ in range(epochs):
            model.train()
            for images, labels in loader:
                optimizer.zero_grad()
                loss = loss_fn(model(images), labels)
                loss.backward()
                optimizer.step()
                seen += len(labels)
        train_seconds = time.perf_counter() - started
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in DataLoader(test, batch_size=1000):
                correct += (model(images).argmax(1) == labels).sum().item()
    return {"images_per_second": seen / train_seconds, "test_top1": correct / len(test),
            "train_seconds": train_seconds}


def vqtool_train(data_dir: Path, epochs: int, batch_size: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as root:
        command = [sys.executable, "-m", "vqtool", "train", "fashion-mnist", "--data-dir", str(data_dir),
                   "--model", "smallcnn", "--epochs", str(epochs), "--batch-size", str(batch_size),
                   "--seed", str(seed), "--json", "-q", "--out", str(Path(root) / "run")]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - started
    summary = json.loads(result.stdout)
    return {"images_per_second": summary["images_per_second"], "test_top1": summary["test_top1"],
            "command_seconds": wall}


def main():
    default = Path(os.environ.get("VQTOOL_TEST_ASSETS", Path(__file__).parents[2] / "shared" / "assets"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default / "data" / "fashion-mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not any(args.data_dir.glob("train-images-idx3-ubyte*")):
        sys.exit(f"no Fashion-MNIST IDX files in {args.data_dir} (pass --data-dir)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.epochs} epochs, "
          f"batch {args.batch_size}")
    plain = plain_loop(args.data_dir, args.epochs, args.batch_size, args.seed)
    print(f"plain loop : {plain['images_per_second']:8.0f} img/s  test acc {plain['test_top1']:.4f}  "
          f"({plain['train_seconds']:.1f} s training)")
    ours = vqtool_train(args.data_dir, args.epochs, args.batch_size, args.seed)
    print(f"vqtool     : {ours['images_per_second']:8.0f} img/s  test acc {ours['test_top1']:.4f}  "
          f"({ours['command_seconds']:.1f} s for the whole command)")
    print(f"ratio (vqtool / plain img/s): {ours['images_per_second'] / plain['images_per_second']:.2f}x  "
          f"accuracy difference: {ours['test_top1'] - plain['test_top1']:+.4f}")


if __name__ == "__main__":
    main()
