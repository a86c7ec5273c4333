"""Built-in dataset sources: class folders, the torchvision classics and the embedded digits."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from vqtool.data import DataOptions, Dataset, Split, split_off
from vqtool.data.locations import default_data_dir
from vqtool.data.images import class_folders, common_square_size, scan_class_tree
from vqtool.errors import VQError, first_line
from vqtool.pickles import CIFAR_BATCH, load as unpickle
from vqtool.registry import register_dataset

VAL_NAMES = ("val", "valid", "validation")
DEFAULT_VAL_SPLIT = 0.1
SINGLE_TREE_VAL_SPLIT = 0.2


def _val_split(options: DataOptions, default: float) -> float:
    fraction = default if options.val_split is None else options.val_split
    if not 0 <= fraction < 1:
        raise VQError(f"--val-split must be in [0, 1), got {fraction}", usage=True)
    return fraction


def carve_val(train: Split, options: DataOptions, default: float = DEFAULT_VAL_SPLIT):
    fraction = _val_split(options, default)
    if fraction == 0:
        return train, None
    kept, val = split_off(train, fraction, options.seed)
    if len(val) == 0:
        raise VQError(f"--val-split {fraction} holds out no image of {len(train)} (every class has a single "
                      f"image); add images, give a val/ folder, or pass --val-split 0 to train without validation",
                      usage=True)
    return kept, val


# --- class folders -----------------------------------------------------------------------------

TRAIN_NAMES = ("train", "training")
TEST_NAMES = ("test",)


def _find_child(root: Path, names) -> Path | None:
    children = {p.name.lower(): p for p in class_folders(root)}
    return next((children[n] for n in names if n in children), None)


@register_dataset("folder", matches=os.path.isdir,
                  description="class-per-folder image tree (train/ + val|valid|validation|test/, or one tree)")
def load_folder(spec: str, options: DataOptions) -> Dataset:
    root = Path(spec)
    train_dir, val_dir, test_dir = (_find_child(root, names) for names in (TRAIN_NAMES, VAL_NAMES, TEST_NAMES))
    if not (train_dir or val_dir or test_dir):  # one tree of class folders, split here
        classes, train = _tree_split(root)
        train, val = carve_val(train, options, SINGLE_TREE_VAL_SPLIT)
        test = None
    else:
        _refuse_mixed_layout(root, train_dir)
        first = train_dir or val_dir or test_dir  # a held-out-only tree (val/ or test/ alone) is for eval
        classes, first_split = _tree_split(first)
        train = first_split if train_dir else None
        val = (first_split if first == val_dir else _class_split(val_dir, classes)) if val_dir else None
        test = (first_split if first == test_dir else _class_split(test_dir, classes)) if test_dir else None
        if train is not None and val is None:
            train, val = carve_val(train, options)
    files = (train or val or test).files
    spec_record = {"source": "folder", "path": str(root.resolve()), "val_split": options.val_split, "seed": options.seed}
    return Dataset(name=root.name, classes=classes, channels=3, train=train, val=val, test=test,
                   native_size=common_square_size(files), spec=spec_record)


def _refuse_mixed_layout(root: Path, train_dir: Path | None) -> None:
    """Without train/, split folders beside class folders are ambiguous: is val/ a split or a class?"""
    if train_dir is not None:
        return
    split_names = {*VAL_NAMES, *TEST_NAMES}
    others = [p.name for p in class_folders(root) if p.name.lower() not in split_names]
    if others:
        raise VQError(f"{root}: holds split folders (val/ or test/) beside other folders ({', '.join(others[:3])}) "
                      f"and no train/; put the class folders under train/", usage=True)


def _tree_split(folder: Path) -> tuple[list[str], Split]:
    import torch  # imported when a source loads: registering the sources must not load it

    classes, files, labels, unreadable = scan_class_tree(folder)
    return classes, Split(labels=torch.tensor(labels, dtype=torch.long), files=files, skipped=unreadable)


def _class_split(folder: Path, classes: list[str]) -> Split:
    import torch

    found, split = _tree_split(folder)
    if set(found) != set(classes):
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        detail = "; ".join(s for s in (f"missing {', '.join(missing)}" if missing else "",
                                       f"extra {', '.join(extra)}" if extra else "") if s)
        raise VQError(f"{folder}: classes differ from the training classes ({detail})", usage=True)
    index = torch.tensor([classes.index(name) for name in found], dtype=torch.long)
    return Split(labels=index[split.labels], files=split.files, skipped=split.skipped)


# --- embedded digits -----------------------------------------------------------------------------


# The 8x8 handwritten digits scikit-learn bundles (UCI "Optical Recognition of Handwritten Digits", CC BY 4.0),
# the same 1,797 images (values 0-16) and labels in the same order, kept beside this module: importing
# sklearn.datasets to read them took 2.4 s of every command on them.
DIGITS_FILE = Path(__file__).with_name("digits.npz")


@register_dataset("digits", description="the 8x8 handwritten digits scikit-learn bundles (1,797 images), no network")
def load_digits(spec: str, options: DataOptions) -> Dataset:
    import torch

    with np.load(DIGITS_FILE) as stored:
        images, labels = stored["images"], stored["labels"]
    pixels = torch.from_numpy(np.round(images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    everything = Split(labels=torch.from_numpy(labels.astype(np.int64)), pixels=pixels)
    rest, test = split_off(everything, 0.2, seed=0)  # a fixed test set, whatever --seed says
    train, val = carve_val(rest, options)
    return Dataset(name="digits", classes=[str(d) for d in range(10)], channels=1, train=train, val=val,
                   test=test, native_size=8, flips=False,
                   spec={"source": "digits", "val_split": options.val_split, "seed": options.seed})


# --- torchvision classics --------------------------------------------------------------------------

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise VQError(f"{path}: truncated IDX file ({array.size} of {int(np.prod(shape))} values)")
    return array.reshape(shape)


def _find_file(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _idx_dataset(name: str, torchvision_name: str, classes: list[str], mean: float, std: float):
    def load(spec: str, options: DataOptions) -> Dataset:
        import torch

        root = Path(options.data_dir or default_data_dir())
        folders = [root, root / torchvision_name / "raw", root / torchvision_name, root / name]
        if _find_file(folders, IDX_FILES["train"][0]) is None:
            _download(torchvision_name, root)
        splits = {}
        for split, stems in IDX_FILES.items():
            paths = [_find_file(folders, stem) for stem in stems]
            if None in paths:
                raise VQError(_missing_message(name, torchvision_name, root))
            images, labels = (_read_idx(p) for p in paths)
            splits[split] = Split(labels=torch.from_numpy(labels.astype(np.int64)),
                                  pixels=torch.from_numpy(images.copy()).unsqueeze(1))
        train, val = carve_val(splits["train"], options)
        return Dataset(name=name, classes=classes, channels=1, train=train, val=val, test=splits["test"],
                       native_size=28, mean=(mean,), std=(std,), flips=name != "mnist",
                       spec={"source": name, "data_dir": str(root.resolve()), "val_split": options.val_split,
                             "seed": options.seed})

    return load


def _missing_message(name: str, torchvision_name: str, root: Path) -> str:
    files = ", ".join(f"{stem}.gz" for stems in IDX_FILES.values() for stem in stems)
    return (f"{name} files not found and could not be downloaded; put {files} "
            f"in {root / torchvision_name / 'raw'} (or pass --data-dir FOLDER holding them)")


def _download(torchvision_name: str, root: Path) -> None:
    """Fetch with torchvision when the network allows; a short timeout keeps offline runs fast."""
    import socket

    import torchvision.datasets

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)
    try:
        getattr(torchvision.datasets, torchvision_name)(str(root), download=True)
    except Exception:
        pass  # the caller names the files that are missing
    finally:
        socket.setdefaulttimeout(previous)


register_dataset("mnist", description="MNIST handwritten digits (IDX files in --data-dir)")(
    _idx_dataset("mnist", "MNIST", [str(d) for d in range(10)], 0.1307, 0.3081))
register_dataset("fashion-mnist", description="Fashion-MNIST clothing images (IDX files in --data-dir)")(
    _idx_dataset("fashion-mnist", "FashionMNIST", FASHION_CLASSES, 0.2860, 0.3530))


CIFAR_FOLDER = "cifar-10-batches-py"


@register_dataset("cifar10", description="CIFAR-10 (python batches, or a class-folder PNG tree, in --data-dir)")
def load_cifar10(spec: str, options: DataOptions) -> Dataset:
    root = Path(options.data_dir or default_data_dir())
    for tree in (root / "cifar10", root / "cifar-10", root):
        if tree.is_dir() and _find_child(tree, ("train",)) is not None:
            return load_folder(str(tree), options)
    batches = root / CIFAR_FOLDER
    if not batches.is_dir():
        _download("CIFAR10", root)
    if not batches.is_dir():
        raise VQError(f"cifar10 not found and could not be downloaded; put the extracted {CIFAR_FOLDER}/ folder "
                      f"(or a cifar10/train|test/<class>/*.png tree) in {root} (or pass --data-dir)")
    meta = _read_batch(batches / "batches.meta", "label_names")
    train = _cifar_split([batches / f"data_batch_{i}" for i in range(1, 6)])
    test = _cifar_split([batches / "test_batch"])
    train, val = carve_val(train, options)
    return Dataset(name="cifar10", classes=list(meta["label_names"]), channels=3, train=train, val=val, test=test,
                   native_size=32, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
                   spec={"source": "cifar10", "data_dir": str(root.resolve()), "val_split": options.val_split,
                         "seed": options.seed})


def _read_batch(path: Path, *keys: str) -> dict:
    """A CIFAR-10 python batch (a pickle), unpickled building nothing but numpy arrays and plain data."""
    if not path.is_file():
        raise VQError(f"{path}: missing CIFAR-10 file")
    batch = unpickle(path, CIFAR_BATCH, encoding="latin1")
    if not (isinstance(batch, dict) and all(key in batch for key in keys)):
        raise VQError(f"{path}: not a CIFAR-10 batch (no {' and '.join(keys)})")
    return batch


def _cifar_split(paths) -> Split:
    import torch

    parts = [_read_batch(p, "data", "labels") for p in paths]
    try:
        pixels = np.concatenate([p["data"] for p in parts]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([p["labels"] for p in parts]).astype(np.int64)
    except (TypeError, ValueError) as error:
        raise VQError(f"{paths[0].parent}: CIFAR-10 batches that do not hold 32x32 colour images "
                      f"({first_line(error)})") from error
    return Split(labels=torch.from_numpy(labels), pixels=torch.from_numpy(pixels))
