"""Multi-label: a frozen-backbone `vqtool finetune` against a logistic regression on the same frozen features.

    python benchmarks/multilabel_baseline.py make OUT [--train 900 --val 300 --test 300]
    vqtool finetune OUT/labels.csv --task multilabel --model timm/tf_efficientnet_lite0 \
        --weights ../shared/assets/weights/tf_efficientnet_lite0.in1k.safetensors --out runs/mosaics
    python benchmarks/multilabel_baseline.py compare runs/mosaics [DATA]

``make`` builds (from $VQTOOL_TEST_ASSETS, default ../shared/assets) a multi-label set from the shared Fashion-MNIST files: each
image a 2 x 2 mosaic of 28 px tiles, each tile a random garment (probability
0.6) or empty; its labels are the garment classes it shows (10 labels).
``compare`` takes a multi-label run (its data, or DATA such as a data.yaml for
image-level labels from boxes), computes the checkpoint's backbone features (the
frozen, pretrained backbone a --freeze backbone run keeps) of the train, val and
test images exactly as `vqtool eval` prepares them, fits scikit-learn's
LogisticRegression per label (C chosen on val by macro mAP, as vqtool picks its
epoch), and prints both macro mAPs on the evaluation split (test, else val).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np

ASSETS = Path(os.environ.get("VQTOOL_TEST_ASSETS") or Path(__file__).resolve().parents[2] / "shared" / "assets")
GARMENTS = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def idx(path: Path) -> np.ndarray:
    data = gzip.open(path).read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def make(out: Path, counts: dict[str, int], seed: int = 0) -> None:
    from PIL import Image

    folder = ASSETS / "data" / "fashion-mnist"
    images, labels = idx(folder / "train-images-idx3-ubyte.gz"), idx(folder / "train-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    rows = ["path,labels,split"]
    (out / "images").mkdir(parents=True, exist_ok=True)
    number = 0
    for split, count in counts.items():
        for _ in range(count):
            canvas = np.zeros((56, 56), dtype=np.uint8)
            shown = set()
            for slot in range(4):
                if rng.random() < 0.6:
                    pick = int(rng.integers(len(images)))
                    y, x = divmod(slot, 2)
                    canvas[28 * y:28 * y + 28, 28 * x:28 * x + 28] = images[pick]
                    shown.add(GARMENTS[labels[pick]])
            name = f"images/{number:05d}.png"
            Image.fromarray(canvas).convert("RGB").save(out / name)
            rows.append(f"{name},{'|'.join(sorted(shown))},{split}")
            number += 1
    (out / "labels.csv").write_text("\n".join(rows) + "\n")
    print(f"wrote {number} mosaics and {out / 'labels.csv'}")


def features(model, head: str, split, preprocess) -> np.ndarray:
    """The backbone's output (the head's input) for each image of a prepared split."""
    import torch

    from vqtool.classification.training.features import _hooked
    from vqtool.compute.device import resolve_device
    from vqtool.data.pipeline import Normalizer, batches

    normalize = Normalizer(preprocess, resolve_device("cpu"), channels_last=True)
    blocks = []
    with torch.no_grad(), _hooked(model, head) as backbone:
        for stored, _ in batches(split, 64):
            blocks.append(backbone(normalize(stored)).flatten(1).numpy())
    return np.concatenate(blocks)


def compare(run: str, data: str | None) -> dict:
    from sklearn.linear_model import LogisticRegression

    from vqtool.classification.checkpoints.format import load_checkpoint
    from vqtool.data import DataOptions
    from vqtool.data.pipeline import decode_split
    from vqtool.models.surgery import find_head
    from vqtool.multilabel.evaluate import aligned, dataset_for, evaluate_multilabel
    from vqtool.multilabel.metrics import mean_ap
    from vqtool.classification.inference.classifier import Classifier

    checkpoint = load_checkpoint(run)
    classifier = Classifier(checkpoint.model, checkpoint.classes, checkpoint.preprocess, checkpoint.meta)
    dataset = dataset_for(classifier, data, DataOptions())
    head = find_head(checkpoint.model)
    found = {}
    for name in ("train", "val", "test"):
        if getattr(dataset, name) is not None:
            split = decode_split(aligned(dataset, dataset.split(name), checkpoint.classes), checkpoint.preprocess)
            found[name] = (features(checkpoint.model, head, split, checkpoint.preprocess), split.labels.numpy())
    held = "test" if "test" in found else "val"
    choose = "val" if "val" in found else "train"
    x, y = found["train"]
    trainable = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]  # both answers seen in training

    def fitted(c: float):
        probabilities = {name: np.full(found[name][1].shape, 0.0) for name in found}
        for j in trainable:
            model = LogisticRegression(C=c, max_iter=2000).fit(x, y[:, j])
            for name, (features_of, _) in found.items():
                probabilities[name][:, j] = model.predict_proba(features_of)[:, 1]
        return probabilities

    scores = {c: fitted(c) for c in (0.01, 0.1, 1.0, 10.0)}
    best = max(scores, key=lambda c: mean_ap(scores[c][choose], found[choose][1]))
    baseline = mean_ap(scores[best][held], found[held][1])
    vqtool = evaluate_multilabel(run, data, DataOptions(), split=held).report
    return {"split": held, "images": int(len(found[held][1])), "labels": len(checkpoint.classes),
            "feature_size": int(x.shape[1]), "logistic_regression_C": best,
            "logistic_regression_map": round(baseline, 4), "vqtool_finetune_map": vqtool["map"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("make")
    made.add_argument("out", type=Path)
    for split, default in (("train", 900), ("val", 300), ("test", 300)):
        made.add_argument(f"--{split}", type=int, default=default)
    compared = commands.add_parser("compare")
    compared.add_argument("run")
    compared.add_argument("data", nargs="?")
    args = parser.parse_args()
    if args.command == "make":
        make(args.out, {"train": args.train, "val": args.val, "test": args.test})
    else:
        json.dump(compare(args.run, args.data), sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
