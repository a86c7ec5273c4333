"""Training recipes against the default loop, each pair in one run with the same seed and epochs.

    python benchmarks/recipes.py --data-dir ../shared/assets/data/fashion-mnist [--fraction 1.0]
        [--imbalance-epochs 5] [--recipe-epochs 30] [--timing-fraction 0.2]
        [--photos ../shared/assets/data/cats_vs_dogs
         --weights ../shared/assets/weights/tf_efficientnet_lite0.in1k.safetensors]

1. Class imbalance, on a long-tailed Fashion-MNIST (5 % of the training images
   of classes 5-9 kept): default vs --class-weights auto vs --balanced-sampler,
   macro-F1 on the balanced test set (goal: at least +0.05).
2. Regularisation, on Fashion-MNIST with cnn-bn: default vs --recipe strong
   (test accuracy; goal: above the default).
3. The time per epoch of each option against the default's, in the same run.
4. Photos: cats vs dogs at 224 px, EfficientNet-Lite0 from ImageNet weights with
   its last two stages trained (``--freeze 2``): default vs --recipe basic vs
   --recipe strong (val accuracy: the set has no test split), and the time per
   epoch of each augmentation against the default's (``--photos DIR --weights FILE``).

``--fraction`` keeps that share of every class's training images (all of the
10,000 test images are kept): a reduced run for a small machine.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from vqtool.classification.config import FinetuneOptions, TrainConfig
from vqtool.classification.inference.evaluate import evaluate
from vqtool.classification.training.finetune import finetune_job
from vqtool.classification.recipes import RECIPES
from vqtool.classification.training.train import train_job
from vqtool.data import DataOptions
from vqtool.reporter import SILENT

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
TAIL_CLASSES = range(5, 10)
TAIL_SHARE = 0.05
TIMED_OPTIONS = {
    "default": {},
    "--class-weights auto": {"class_weights": "auto"},
    "--balanced-sampler": {"balanced_sampler": True},
    "--mixup 0.2": {"mixup": 0.2},
    "--cutmix 1.0": {"cutmix": 1.0},
    "--ema 0.9998": {"ema": 0.9998},
    "--augment basic": {"augment": "basic"},
    "--augment trivial": {"augment": "trivial"},
    "--augment randaugment": {"augment": "randaugment"},
    "--augment autoaugment": {"augment": "autoaugment"},
    "--recipe strong": {**RECIPES["strong"], "recipe": "strong", "warmup_epochs": 0},
}


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array).tobytes())


def make_subset(source: Path, target: Path, fraction: float, tail_share: float | None, seed: int = 0) -> Path:
    """Fashion-MNIST IDX files keeping ``fraction`` of each class's training images (and ``tail_share`` of that
    for the tail classes); the test set whole."""
    rng = np.random.default_rng(seed)
    target.mkdir(parents=True, exist_ok=True)
    for split, (images_stem, labels_stem) in FILES.items():
        images = read_idx(next(source.glob(f"{images_stem}*")))
        labels = read_idx(next(source.glob(f"{labels_stem}*")))
        if split == "train":
            keep = []
            for cls in range(10):
                index = rng.permutation(np.flatnonzero(labels == cls))
                share = fraction * (tail_share if tail_share and cls in TAIL_CLASSES else 1.0)
                keep.append(index[:max(1, round(len(index) * share))])
            order = np.sort(np.concatenate(keep))
            images, labels = images[order], labels[order]
        write_idx(target / images_stem, images)
        write_idx(target / labels_stem, labels)
    return target


def run(data_dir: Path, out: Path, model: str, epochs: int, options: dict) -> dict:
    """Train, then evaluate the checkpoint on the test set; the figures of the table."""
    config = TrainConfig(model=model, epochs=epochs, seed=0, **options)
    train_job("fashion-mnist", DataOptions(data_dir=str(data_dir), seed=0), config, reporter=SILENT,
              out_dir=str(out))
    report = evaluate(str(out), None, DataOptions(data_dir=str(data_dir), seed=0)).report
    return {"top1": report["top1"], "macro_f1": report["macro_f1"], "epoch_s": epoch_seconds(out)}


PHOTO_TIMED = {name: options for name, options in TIMED_OPTIONS.items() if "augment" in name or name in (
    "default", "--mixup 0.2", "--ema 0.9998", "--recipe strong")}


def epoch_seconds(run_dir: Path) -> float:
    with open(run_dir / "metrics.csv") as file:
        return statistics.median(float(row["seconds"]) for row in csv.DictReader(file))


def run_photos(photos: Path, weights: Path, out: Path, epochs: int, options: dict) -> dict:
    """Fine-tune Lite0's last two stages on the photos; val accuracy (of the best epoch) and s/epoch."""
    config = TrainConfig(model="timm/tf_efficientnet_lite0", epochs=epochs, seed=0, batch_size=32, lr=1e-3,
                         **options)
    finetune_job(str(photos), DataOptions(seed=0), config,
                 FinetuneOptions(weights=str(weights), freeze="2", cache=False), reporter=SILENT, out_dir=str(out))
    report = evaluate(str(out), None, DataOptions(seed=0), split="val").report
    return {"top1": report["top1"], "macro_f1": report["macro_f1"], "epoch_s": epoch_seconds(out)}


def photo_tables(photos: Path, weights: Path, work: Path, epochs: int) -> None:
    recipes = [("default", {}), ("--recipe basic", {**RECIPES["basic"], "recipe": "basic"}),
               ("--recipe strong", {**RECIPES["strong"], "recipe": "strong"})]
    rows = [(name, run_photos(photos, weights, work / f"p-{i}", epochs, options))
            for i, (name, options) in enumerate(recipes)]
    table(f"cats vs dogs, 224 px, tf_efficientnet_lite0 --freeze 2, {epochs} epochs (figures of the val split, "
          f"which also chose the best epoch: the set has no test split)", rows, rows[0][1])
    rows = [(name, run_photos(photos, weights, work / f"pt-{i}", 1, options))
            for i, (name, options) in enumerate(PHOTO_TIMED.items())]
    table("time per epoch on the photos, one epoch each", rows, rows[0][1])


def table(title: str, rows: list[tuple[str, dict]], baseline: dict) -> None:
    print(f"\n{title}")
    print("| run | test top-1 | macro-F1 | Δ macro-F1 | s/epoch | × default |\n|---|---|---|---|---|---|")
    for name, figures in rows:
        print(f"| {name} | {figures['top1']:.4f} | {figures['macro_f1']:.4f} | "
              f"{figures['macro_f1'] - baseline['macro_f1']:+.4f} | {figures['epoch_s']:.1f} | "
              f"{figures['epoch_s'] / baseline['epoch_s']:.2f} |")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--fraction", type=float, default=1.0, help="share of each class's training images kept")
    parser.add_argument("--imbalance-epochs", type=int, default=5)
    parser.add_argument("--recipe-epochs", type=int, default=30)
    parser.add_argument("--timing-epochs", type=int, default=1)
    parser.add_argument("--model", default="cnn-bn")
    parser.add_argument("--imbalance-model", default="cnn-bn")
    parser.add_argument("--timing-fraction", type=float, default=None, help="default: --fraction")
    parser.add_argument("--photos", type=Path, help="a class-folder tree of photos (cats vs dogs)")
    parser.add_argument("--weights", type=Path, help="tf_efficientnet_lite0 ImageNet weights (timm layout)")
    parser.add_argument("--photo-epochs", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["imbalance", "recipe", "timing"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        print(f"{args.fraction:.0%} of each class's training images, seed 0")
        if "imbalance" not in args.skip:
            tailed = make_subset(args.data_dir, work / "long-tailed", args.fraction, TAIL_SHARE)
            rows = [(name, run(tailed, work / f"lt-{i}", args.imbalance_model, args.imbalance_epochs, options))
                    for i, (name, options) in enumerate([("default", {}), ("--class-weights auto",
                                                         {"class_weights": "auto"}),
                                                        ("--balanced-sampler", {"balanced_sampler": True})])]
            table(f"long-tailed Fashion-MNIST (classes 5-9 keep {TAIL_SHARE:.0%}), {args.imbalance_model}, "
                  f"{args.imbalance_epochs} epochs", rows, rows[0][1])
        data = make_subset(args.data_dir, work / "balanced", args.fraction, None)
        if "recipe" not in args.skip:
            rows = [(name, run(data, work / f"r-{i}", args.model, args.recipe_epochs, options))
                    for i, (name, options) in enumerate([("default", {}), ("--recipe strong", {
                        **RECIPES["strong"], "recipe": "strong"})])]
            table(f"Fashion-MNIST, {args.model}, {args.recipe_epochs} epochs", rows, rows[0][1])
        if "timing" not in args.skip:
            timed = data
            if args.timing_fraction:
                timed = make_subset(args.data_dir, work / "timing", args.timing_fraction, None)
            rows = [(name, run(timed, work / f"t-{i}", args.model, args.timing_epochs, options))
                    for i, (name, options) in enumerate(TIMED_OPTIONS.items())]
            table(f"time per epoch, {args.model}, {args.timing_epochs} epoch(s) each on "
                  f"{args.timing_fraction or args.fraction:.0%} (accuracy after so few epochs is no comparison)",
                  rows, rows[0][1])
        if args.photos:
            photo_tables(args.photos, args.weights, work, args.photo_epochs)


if __name__ == "__main__":
    main()
