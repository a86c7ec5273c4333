"""Datasets listed in a file: a CSV (or TSV) of image paths or ids and labels, or a text list of paths.

``path,label`` rows name image files relative to the list; Kaggle-style
``id,label`` rows name images by id (the file name, with or without its
extension) inside an images folder beside the list (``images/``, ``train/``,
``train_images/`` or one named like the list). A header row is recognised by
its column names; an optional ``split`` column (train, val, test) splits the
rows. A text list with one path per line takes each image's label from its
folder's name. Files that do not exist are reported as unreadable images when
decoded; rows whose label is empty or not a training class are reported with
them.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from vqtool.data import DataOptions, Dataset, Split
from vqtool.data.images import IMAGE_EXTENSIONS, common_square_size, image_files
from vqtool.data.sources import SINGLE_TREE_VAL_SPLIT, carve_val
from vqtool.errors import VQError, first_line
from vqtool.files import read_text
from vqtool.registry import register_dataset

LIST_SUFFIXES = (".csv", ".tsv", ".txt")
PATH_COLUMNS = ("path", "filepath", "file_path", "file", "filename", "file_name", "image", "image_path",
                "image_name", "img", "id", "image_id", "name")
LABEL_COLUMNS = ("label", "class", "category", "target", "class_name", "label_name", "y")
SPLIT_COLUMN = "split"
SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
IMAGE_FOLDERS = ("images", "train", "train_images", "imgs")
MAX_LINE = 64 * 1024  # a row naming an image and its label; longer is not a list (and csv refuses 128k cells)


def is_label_file(spec: str) -> bool:
    return Path(spec).suffix.lower() in LIST_SUFFIXES and os.path.isfile(spec)


@register_dataset("csv", matches=is_label_file,
                  description="a CSV/TSV of image paths or ids and labels (optional split column), or a text list")
def load_label_file(spec: str, options: DataOptions) -> Dataset:
    listing = Path(spec)
    rows = read_rows(listing)
    path_at, label_at, split_at, first = columns(rows, listing)
    records = [(number, row) for number, row in enumerate(rows[first:], start=first + 1)]
    if not records:
        raise VQError(f"{listing}: lists no images", usage=True)
    locate = Locator(listing, [row[path_at] for _, row in records])
    by_split: dict[str, list] = {"train": [], "val": [], "test": []}
    for number, row in records:
        name = SPLITS.get(_cell(row, split_at).lower(), "train") if split_at is not None else "train"
        path = locate(row[path_at])
        label = _cell(row, label_at) if label_at is not None else Path(path).parent.name
        by_split[name].append((number, path, label))
    known = sorted({label for _, _, label in by_split["train"] or by_split["val"] or by_split["test"] if label},
                   key=_natural)
    if not known:
        raise VQError(f"{listing}: no row has a label", usage=True)
    by_split, repeated = _first_of_each_image(listing, by_split, set(known))
    splits = {name: _split(listing, entries, known) for name, entries in by_split.items() if entries}
    next(iter(splits.values())).rejected.update(repeated)
    train, val, test = (splits.get(name) for name in ("train", "val", "test"))
    if train is not None and val is None:
        train, val = carve_val(train, options, SINGLE_TREE_VAL_SPLIT)
    files = next(split for split in (train, val, test) if split is not None).files
    spec_record = {"source": "csv", "path": str(listing.resolve()), "val_split": options.val_split,
                   "seed": options.seed}
    return Dataset(name=listing.stem, classes=known, channels=3, train=train, val=val, test=test,
                   native_size=common_square_size(files), spec=spec_record)


def read_rows(listing: Path) -> list[list[str]]:
    """The list's non-empty rows as cells: CSV/TSV by their delimiter, a text list by tabs, commas or spaces."""
    try:
        text = read_text(listing, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise VQError(f"{listing}: cannot read the list ({_reason(error)})") from error
    if "\0" in text:
        raise VQError(f"{listing}: holds a NUL character; not a text list", usage=True)
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    longest = max(map(len, lines), default=0)
    if longest > MAX_LINE:
        raise VQError(f"{listing}: a line of {longest:,} characters (over {MAX_LINE:,}); not a list of image paths",
                      usage=True)
    sample = "\n".join(lines[:5])
    delimiter = "\t" if "\t" in sample else "," if "," in sample or listing.suffix.lower() != ".txt" else None
    if delimiter is None:  # a text list: path [label [split]] separated by spaces
        return [line.split() for line in lines]
    try:
        return [[cell.strip() for cell in row] for row in csv.reader(lines, delimiter=delimiter)]
    except csv.Error as error:
        raise VQError(f"{listing}: not a readable list ({error})", usage=True) from error


def _reason(error: Exception) -> str:
    return error.strerror if isinstance(error, OSError) and error.strerror else first_line(error)


def columns(rows: list[list[str]], listing: Path) -> tuple[int, int | None, int | None, int]:
    """(path column, label column or None, split column or None, first data row) of the rows."""
    if not rows:
        raise VQError(f"{listing}: lists no images", usage=True)
    names = [cell.lower() for cell in rows[0]]
    if not set(names) & {*PATH_COLUMNS, *LABEL_COLUMNS, SPLIT_COLUMN}:  # no header: path, label, split
        width = len(rows[0])
        return 0, 1 if width > 1 else None, 2 if width > 2 else None, 0
    path_at = next((names.index(n) for n in PATH_COLUMNS if n in names), 0)
    label_at = next((names.index(n) for n in LABEL_COLUMNS if n in names), None)
    if label_at is None and len(names) > 1:
        raise VQError(f"{listing}: no label column (name one {', '.join(LABEL_COLUMNS[:3])}, ...)", usage=True)
    return path_at, label_at, names.index(SPLIT_COLUMN) if SPLIT_COLUMN in names else None, 1


def _cell(row: list[str], at: int | None) -> str:
    return row[at] if at is not None and at < len(row) else ""


def _natural(label: str):
    """Numeric labels in numeric order (2 before 10), names alphabetically."""
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


class Locator:
    """Turns a listed path or id into a file path, relative to the list or inside its images folder.

    Whether the list names paths or ids is decided once, on a sample of rows;
    an images folder is walked once (one scandir walk) to look ids up.
    """

    def __init__(self, listing: Path, values: list[str]):
        self.base = listing.parent
        sample = values[:: max(1, len(values) // 20)][:20]
        direct = sum((self.base / value).is_file() for value in sample)
        self.folder, self.found = None, {}
        if direct * 2 < len(sample):
            self.folder = self._images_folder(listing, sample)
        if self.folder is not None:
            for path in image_files(self.folder, {}):
                name = os.path.basename(path)
                self.found.setdefault(name, path)
                self.found.setdefault(os.path.splitext(name)[0], path)

    def _images_folder(self, listing: Path, sample: list[str]) -> Path | None:
        for name in (*IMAGE_FOLDERS, listing.stem):
            folder = self.base / name
            if folder.is_dir() and any(_id_file(folder, value) for value in sample):
                return folder
        return None

    def __call__(self, value: str) -> str:
        if self.folder is None:
            return str(self.base / value)
        return self.found.get(value) or self.found.get(os.path.basename(value)) or str(self.folder / value)


def _id_file(folder: Path, value: str) -> bool:
    if Path(value).suffix.lower() in IMAGE_EXTENSIONS:
        return (folder / value).is_file()
    return any((folder / f"{value}{suffix}").is_file() for suffix in (".jpg", ".png", ".jpeg"))


def _first_of_each_image(listing: Path, by_split: dict[str, list], known: set) -> tuple[dict[str, list], dict]:
    """The rows with one image listed again (with a class) left out: the image could otherwise land in train and
    in val. Each image is used once (train first, then val, then test); the others are reported as rejected rows."""
    first_row, repeated, kept = {}, {}, {name: [] for name in by_split}
    for name, entries in by_split.items():
        for number, path, label in entries:
            seen = first_row.setdefault(os.path.normpath(path), number) if label in known else number
            if seen != number:
                repeated[f"{listing.name} row {number}"] = f"the same image as row {seen}"
            else:
                kept[name].append((number, path, label))
    return kept, repeated


def _split(listing: Path, entries: list[tuple[int, str, str]], classes: list[str]) -> Split:
    """The rows of one split; rows whose label is empty or not a class are set aside with the reason."""
    index = {name: i for i, name in enumerate(classes)}
    files, labels, rejected = [], [], {}
    for number, path, label in entries:
        if label in index:
            files.append(path)
            labels.append(index[label])
        else:
            rejected[f"{listing.name} row {number}"] = (f"label {label!r} is not a training class" if label
                                                       else "no label")
    import torch  # imported when a source loads: registering the sources must not load it

    return Split(labels=torch.tensor(labels, dtype=torch.long), files=files, rejected=rejected)
