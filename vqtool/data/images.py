"""Reading image files: finding them in class folders and decoding them to fixed-size tensors."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vqtool.errors import VQError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_class_tree(root: Path) -> tuple[list[str], list[str], list[int]]:
    """(classes, files, labels) for a folder of class folders; files are sorted for reproducibility."""
    folders = class_folders(root)
    if not folders:
        raise VQError(f"{root}: no class folders (expected {root}/<class>/<image files>)", usage=True)
    classes, files, labels = [], [], []
    for folder in folders:
        images = sorted(str(p) for p in folder.rglob("*") if is_image_file(p))
        if not images:
            raise VQError(f"{folder}: class folder has no images", usage=True)
        labels += [len(classes)] * len(images)
        classes.append(folder.name)
        files += images
    return classes, files, labels


def common_square_size(files: list[str], samples: int = 32) -> int | None:
    """The side shared by a sample of square images (a CIFAR-style tree), else None; reads headers only."""
    sizes = set()
    for path in files[:: max(1, len(files) // samples)][:samples]:
        try:
            with Image.open(path) as image:
                sizes.add(image.size)
        except (OSError, ValueError):
            continue
    if len(sizes) == 1:
        width, height = sizes.pop()
        return width if width == height else None
    return None


def open_image(path: str, channels: int, draft_size: int | None = None) -> Image.Image:
    """Open and fully decode an image as RGB or L; raises OSError/ValueError when unreadable."""
    with Image.open(path) as image:
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))  # decode at reduced scale: much faster
        image.load()
        return image.convert("L" if channels == 1 else "RGB")


def fit_square(image: Image.Image, size: int, resize: int | None = None, interpolation: str = "bilinear"):
    """Resize the shorter side to ``resize`` (default ``size``) and centre-crop ``size``×``size``."""
    resize = resize or size
    width, height = image.size
    scale = resize / min(width, height)
    new_w, new_h = max(resize, round(width * scale)), max(resize, round(height * scale))
    image = image.resize((new_w, new_h), RESAMPLING[interpolation])
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def load_image(path: str, size: int, channels: int, resize: int | None = None,
               interpolation: str = "bilinear") -> torch.Tensor:
    """One file as a uint8 C×size×size tensor."""
    image = open_image(path, channels, draft_size=resize or size)
    return to_tensor(fit_square(image, size, resize, interpolation))


def decode_files(files: list[str], size: int, channels: int, resize: int | None = None,
                 interpolation: str = "bilinear", workers: int | None = None):
    """Decode many files in threads (Pillow releases the GIL while decoding).

    Returns (uint8 N×C×S×S tensor of the readable files, their positions, {bad path: reason}).
    """
    def decode(path):
        try:
            return load_image(path, size, channels, resize, interpolation), None
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            return None, str(error) or type(error).__name__

    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(decode, files))
    good = [i for i, (tensor, _) in enumerate(results) if tensor is not None]
    bad = {files[i]: reason for i, (tensor, reason) in enumerate(results) if tensor is None}
    pixels = torch.stack([results[i][0] for i in good]) if good else torch.empty(0, channels, size, size, dtype=torch.uint8)
    return pixels, torch.tensor(good, dtype=torch.long), bad
