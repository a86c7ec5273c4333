"""Multi-label datasets: splits whose labels are an N × L multi-hot float tensor.

Read from:

- a CSV or TSV with a header: a path column and a labels column holding several labels
  separated by ``|``, ``;`` or ``,`` (else by spaces): ``img.jpg,cat|dog``; or one 0/1 column per
  label (``path,cat,dog`` then ``img.jpg,1,1``); an optional ``split`` column (train, val, test);
- a text list: ``path label label ...`` per line (tabs or spaces);
- a YOLO data.yaml (``--labels-from boxes`` makes training multi-label): each image labelled with the
  classes it has boxes of.

Paths resolve as for single-label lists (:class:`vqtool.data.label_files.Locator`). A row
without labels is an image where no label applies (a negative for every label), not an error.
Without a val split, one is held out at random (``--val-split``, default 0.2), seeded.
"""

from __future__ import annotations

import re
from pathlib import Path

from vqtool.data import DataOptions, Dataset, Split
from vqtool.data.images import common_square_size
from vqtool.data.label_files import (LABEL_COLUMNS, PATH_COLUMNS, SPLIT_COLUMN, SPLITS, Locator, _natural,
                                     is_label_file, read_rows)
from vqtool.data.sources import SINGLE_TREE_VAL_SPLIT
from vqtool.errors import VQError

LABELS_COLUMNS = ("labels", "tags", *LABEL_COLUMNS)
SEPARATORS = re.compile(r"[|;,]")


def load_multilabel(spec: str, options: DataOptions, labels_from: str | None = None) -> Dataset:
    """The multi-label dataset ``spec`` names (see the module)."""
    from vqtool.detection.data import is_yolo_yaml

    if is_yolo_yaml(spec):  # a data.yaml's labels are its boxes' classes
        return from_yolo(spec, options)
    if labels_from == "boxes":
        raise VQError(f"{spec}: --labels-from boxes reads the image-level labels of a YOLO data.yaml; a list of "
                      f"images and their labels needs no --labels-from", usage=True)
    if is_label_file(spec):
        return from_list(Path(spec), options)
    raise VQError(f"{spec}: multi-label data is a CSV/TSV or text list of images and their labels, or a YOLO "
                  f"data.yaml with --labels-from boxes", usage=True)


def split_labels(cell: str) -> list[str]:
    """``a|b``, ``a;b``, ``a,b`` or ``a b`` -> [a, b]."""
    parts = SEPARATORS.split(cell) if SEPARATORS.search(cell) else cell.split()
    return [part.strip() for part in parts if part.strip()]


def from_list(listing: Path, options: DataOptions) -> Dataset:
    rows = read_rows(listing)
    if not rows:
        raise VQError(f"{listing}: lists no images", usage=True)
    header = [cell.lower() for cell in rows[0]]
    known = {*PATH_COLUMNS, *LABELS_COLUMNS, SPLIT_COLUMN}
    if set(header) & known:
        path_at = next((header.index(n) for n in PATH_COLUMNS if n in header), 0)
        split_at = header.index(SPLIT_COLUMN) if SPLIT_COLUMN in header else None
        label_at = next((header.index(n) for n in LABELS_COLUMNS if n in header), None)
        body = rows[1:]
        if label_at is not None:
            entries = [(row[path_at], split_labels(_cell(row, label_at)), _cell(row, split_at)) for row in body]
            classes = None
        else:  # one 0/1 column per label
            label_columns = [i for i in range(len(header)) if i not in (path_at, split_at)]
            classes = [rows[0][i] for i in label_columns]
            entries = [(row[path_at], [rows[0][i] for i in label_columns if _flag(listing, row, i)],
                        _cell(row, split_at)) for row in body]
    else:  # a text list, or a CSV without a header: path, then labels
        entries = [(row[0], [label for cell in row[1:] for label in split_labels(cell)], "") for row in rows]
        classes = None
    if not entries:
        raise VQError(f"{listing}: lists no images", usage=True)
    classes = classes or sorted({label for _, labels, _ in entries for label in labels}, key=_natural)
    if not classes:
        raise VQError(f"{listing}: no row has a label", usage=True)
    locate = Locator(listing, [path for path, _, _ in entries])
    by_split: dict[str, list] = {"train": [], "val": [], "test": []}
    for path, labels, split in entries:
        by_split[SPLITS.get(split.lower(), "train")].append((locate(path), labels))
    spec = {"source": "multilabel", "path": str(listing.resolve()), "val_split": options.val_split,
            "seed": options.seed}
    return _dataset(listing.stem, classes, by_split, options, spec)


def _cell(row: list[str], at: int | None) -> str:
    return row[at] if at is not None and at < len(row) else ""


def _flag(listing: Path, row: list[str], at: int) -> bool:
    value = _cell(row, at).strip()
    if value not in ("0", "1", ""):
        raise VQError(f"{listing}: {value!r} in a label column; one column per label holds 0 or 1 (or name a "
                      f"'labels' column holding a|b)", usage=True)
    return value == "1"


def from_yolo(spec: str, options: DataOptions) -> Dataset:
    """Image-level labels of a YOLO data.yaml: the classes of each image's boxes."""
    from ultralytics.data.utils import img2label_paths

    from vqtool.detection.data import load_yolo, split_images

    yolo = load_yolo(spec)
    by_split: dict[str, list] = {"train": [], "val": [], "test": []}
    for name, sources in yolo.splits.items():
        images = split_images(sources)
        for image, label_file in zip(images, img2label_paths(images)):
            by_split[name].append((image, [yolo.classes[i] for i in _box_classes(label_file, len(yolo.classes))]))
    spec_record = {"source": "multilabel", "path": str(yolo.yaml), "labels_from": "boxes",
                   "val_split": options.val_split, "seed": options.seed}
    return _dataset(yolo.name, yolo.classes, by_split, options, spec_record)


def _box_classes(label_file: str, num_classes: int) -> list[int]:
    """The distinct valid class ids of a YOLO label file (none when it is missing: a background image)."""
    from vqtool.files import read_text

    try:
        text = read_text(Path(label_file))
    except (OSError, UnicodeDecodeError):
        return []
    found = set()
    for line in text.splitlines():
        first = line.split()[:1]
        if first and first[0].isdigit() and int(first[0]) < num_classes:
            found.add(int(first[0]))
    return sorted(found)


def _dataset(name: str, classes: list[str], by_split: dict[str, list], options: DataOptions,
             spec: dict) -> Dataset:
    splits = {split: _split(entries, classes) for split, entries in by_split.items() if entries}
    train, val, test = (splits.get(split) for split in ("train", "val", "test"))
    if train is not None and val is None:
        train, val = carve_val(train, options)
    files = next(split for split in (train, val, test) if split is not None).files
    return Dataset(name=name, classes=classes, channels=3, train=train, val=val, test=test,
                   native_size=common_square_size(files), spec=spec)


def _split(entries: list[tuple[str, list[str]]], classes: list[str]) -> Split:
    import torch

    index = {name: i for i, name in enumerate(classes)}  # every listed label is one (classes are their union)
    targets = torch.zeros(len(entries), len(classes))
    for row, (_, labels) in enumerate(entries):
        targets[row, [index[label] for label in labels]] = 1.0
    return Split(labels=targets, files=[path for path, _ in entries])


def carve_val(train: Split, options: DataOptions) -> tuple[Split, Split | None]:
    """(train, val): ``--val-split`` of the images held out at random, seeded (stratifying needs one label)."""
    import torch

    fraction = SINGLE_TREE_VAL_SPLIT if options.val_split is None else options.val_split
    if fraction == 0:
        return train, None
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(options.seed))
    held = max(1, round(len(train) * fraction))
    if held >= len(train):
        raise VQError(f"--val-split {fraction} leaves no training image of {len(train)}", usage=True)
    return train.subset(order[held:].sort().values), train.subset(order[:held].sort().values)
