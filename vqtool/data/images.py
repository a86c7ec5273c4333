"""Reading image files: finding them in class folders and decoding them to fixed-size tensors.

Every image vqtool decodes itself (classifier training and evaluation, conv)
goes through :func:`read_image` or :func:`decode_files`, so every path gets the
same pixels: EXIF orientation applied, 16-bit and float images scaled to 8
bits, and images over the decompression-bomb limit (``VQTOOL_MAX_IMAGE_PIXELS``,
default Pillow's 89,478,485 pixels) treated as unreadable.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from vqtool.errors import VQError, debug_enabled, first_line
from vqtool.files import IMAGE_LIMIT, open_regular

if TYPE_CHECKING:  # torch loads when images are decoded, not when the sources register
    import torch

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
JUNK_NAMES = {"__MACOSX"}  # macOS archive debris; names starting with "." (.DS_Store, ._x.jpg) are skipped too
MAX_PIXELS_VARIABLE = "VQTOOL_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's default, read once before anything changes it


class UnreadableImage(Exception):
    """An image file vqtool cannot decode; the message says why."""


def is_junk(name: str) -> bool:
    """Hidden files and folders and macOS debris: never data."""
    return name.startswith(".") or name in JUNK_NAMES


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not is_junk(path.name)


# --- listing class trees -------------------------------------------------------------------------


def _entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return [entry for entry in entries if not is_junk(entry.name)]


def list_folder(folder: Path) -> list[os.DirEntry]:
    """The entries of a folder, junk left out; an unreadable folder is one clear error."""
    try:
        return _entries(folder)
    except OSError as error:
        raise VQError(f"{folder}: cannot read the folder ({error.strerror or first_line(error)})") from error


def class_folders(root: Path) -> list[Path]:
    return sorted(Path(entry.path) for entry in list_folder(root) if _is(entry.is_dir, False))


def _is(test, when_unknown: bool) -> bool:
    """A DirEntry test that follows links; a link that loops answers ``when_unknown`` instead of raising."""
    try:
        return test()
    except OSError:
        return when_unknown


def image_files(folder: Path, unreadable: dict[str, str]) -> list[str]:
    """Image files under ``folder`` (one scandir walk, no file opened), sorted.

    Subfolders that cannot be read are added to ``unreadable`` (path -> reason)
    for the caller to report; symlinked subfolders are not followed (as rglob).
    """
    found, pending = [], [folder]
    while pending:
        current = pending.pop()
        if current == folder:
            entries = list_folder(folder)  # the class folder itself must be readable
        else:
            try:
                entries = _entries(current)
            except OSError as error:
                unreadable[str(current)] = f"cannot read the folder ({error.strerror or first_line(error)})"
                continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
            elif Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS and _is(entry.is_file, True):
                found.append(entry.path)  # a link that loops is listed, then reported as unreadable
    return sorted(found)


def scan_class_tree(root: Path) -> tuple[list[str], list[str], list[int], dict[str, str]]:
    """(classes, files, labels, unreadable subfolders) for a folder of class folders; files sorted."""
    folders = class_folders(root)
    if not folders:
        raise VQError(f"{root}: no class folders (expected {root}/<class>/<image files>)", usage=True)
    classes, files, labels, unreadable = [], [], [], {}
    for folder in folders:
        images = image_files(folder, unreadable)
        if not images:
            raise VQError(f"{folder}: class folder has no images", usage=True)
        labels += [len(classes)] * len(images)
        classes.append(folder.name)
        files += images
    return classes, files, labels, unreadable


def common_square_size(files: list[str], samples: int = 32) -> int | None:
    """The side shared by a sample of square images (a CIFAR-style tree), else None; reads headers only."""
    sizes = set()
    with pillow_limits():
        for path in files[:: max(1, len(files) // samples)][:samples]:
            try:
                with open_regular(path, IMAGE_LIMIT) as file, Image.open(file) as image:
                    sizes.add(image.size)
            except Exception:  # noqa: BLE001 - an unreadable sample says nothing about the size; decoding reports it
                continue
    if len(sizes) == 1:
        width, height = sizes.pop()
        return width if width == height else None
    return None


# --- decoding ------------------------------------------------------------------------------------


def max_image_pixels() -> int:
    """The decompression-bomb limit: ``VQTOOL_MAX_IMAGE_PIXELS`` or Pillow's default."""
    value = os.environ.get(MAX_PIXELS_VARIABLE, "").strip().replace("_", "").replace(",", "")
    if not value:
        return DEFAULT_MAX_PIXELS
    if not value.isdigit() or int(value) == 0:
        raise VQError(f"{MAX_PIXELS_VARIABLE}={os.environ[MAX_PIXELS_VARIABLE]!r}: give a positive number of "
                      f"pixels", usage=True)
    return int(value)


@contextlib.contextmanager
def pillow_limits():
    """Pillow set up the vqtool way while decoding: images over the limit raise instead of warning.

    Warnings filters are process-wide, so this is entered once around a whole
    batch (threads see the same filters), never inside a worker thread.
    """
    limit = max_image_pixels()
    previous = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        if not debug_enabled():  # "Possibly corrupt EXIF data" and the like: the pixels are what matters
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        Image.MAX_IMAGE_PIXELS = limit
        try:
            yield limit
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def read_image(path: str, channels: int, draft_size: int | None = None) -> Image.Image:
    """One file decoded as RGB (or L for ``channels == 1``); raises UnreadableImage."""
    with pillow_limits():
        return decode_image(path, channels, draft_size)


def decode_image(path: str, channels: int, draft_size: int | None = None) -> Image.Image:
    """``read_image`` without the Pillow set-up: for callers already inside ``pillow_limits``."""
    return decode_image_sized(path, channels, draft_size)[0]


def decode_image_sized(path: str, channels: int, draft_size: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """``decode_image`` and the full image's (width, height) as it is meant to be seen (a draft decodes smaller)."""
    try:
        with open_regular(path, IMAGE_LIMIT) as file, Image.open(file) as image:
            width, height = image.size
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))  # decode at reduced scale: much faster
            image.load()
            decoded = image.size
            oriented = upright(image)
            if oriented.size != decoded:  # EXIF turned it a quarter
                width, height = height, width
            return eight_bit(oriented).convert("L" if channels == 1 else "RGB"), (width, height)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableImage(f"over the limit of {Image.MAX_IMAGE_PIXELS:,} pixels for one image (a "
                              f"decompression bomb?); raise it with {MAX_PIXELS_VARIABLE}") from error
    except Exception as error:  # noqa: BLE001 - whatever a decoder raises on a bad file, the file is unreadable
        raise UnreadableImage(_reason(error)) from error


def _reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return first_line(error)


def upright(image: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: its EXIF Orientation applied (a phone photo's rotation)."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # noqa: BLE001 - malformed EXIF: the orientation is unknown, the pixels are still good
        pass
    return image


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale images scaled (not clipped) to 8 bits; other modes unchanged.

    Integer images with a known bit depth (a 16-bit PNG, a TIFF's BitsPerSample)
    keep their top 8 bits, as Pillow and OpenCV reduce 16-bit colour images;
    float images in [0, 1] and values within 0..255 keep their scale; anything
    else is stretched from its minimum to its maximum.
    """
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    bits = _integer_bits(image)
    if bits is not None:
        scaled = np.floor(values / 2 ** (bits - 8))
    else:
        low, high = _value_range(image, values)
        scaled = np.floor((values - low) * (255 / (high - low)) + 0.5) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")


def _integer_bits(image: Image.Image) -> int | None:
    """The bit depth of an unsigned integer image when the file declares one between 9 and 16, else None."""
    if image.mode == "F" or image.mode == "I;16S":
        return None
    tags = getattr(image, "tag_v2", None)
    declared = tags.get(258) if tags is not None else None  # TIFF BitsPerSample
    if isinstance(declared, tuple):
        declared = declared[0] if declared else None
    if declared is None and (image.mode.startswith("I;16") or image.format == "PNG"):
        declared = 16  # a PNG decoded as I or I;16 is a 16-bit greyscale PNG
    return declared if isinstance(declared, int) and 8 < declared <= 16 else None


def _value_range(image: Image.Image, values: np.ndarray) -> tuple[float, float]:
    """The range that maps to 0..255: [0, 1] for floats in it, 0..255 for values in it, else the values' own."""
    smallest, largest = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F" and smallest >= 0 and largest <= 1:
        return 0.0, 1.0
    if smallest >= 0 and largest <= 255:
        return 0.0, 255.0
    return smallest, largest


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
    import torch  # here, not at the top: registering the sources (and so task_of) must not load torch

    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def load_image(path: str, size: int, channels: int, resize: int | None = None,
               interpolation: str = "bilinear") -> torch.Tensor:
    """One file as a uint8 C×size×size tensor (inside ``pillow_limits``); raises UnreadableImage."""
    return load_image_sized(path, size, channels, resize, interpolation)[0]


def load_image_sized(path: str, size: int, channels: int, resize: int | None = None,
                     interpolation: str = "bilinear") -> tuple[torch.Tensor, tuple[int, int]]:
    """``load_image`` and the image's own (width, height), EXIF orientation applied."""
    image, full_size = decode_image_sized(path, channels, draft_size=resize or size)
    return to_tensor(fit_square(image, size, resize, interpolation)), full_size


@contextlib.contextmanager
def decoding_pool(workers: int | None = None):
    """Threads to decode in (Pillow releases the GIL while decoding), with Pillow set up the vqtool way."""
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with pillow_limits(), ThreadPoolExecutor(workers) as pool:
        yield pool


def decode_into(pool: ThreadPoolExecutor, files: list[str], out: np.ndarray, size: int, channels: int,
                resize: int | None = None, interpolation: str = "bilinear") -> dict[int, str]:
    """Decode ``files`` straight into the rows of ``out`` (N×C×S×S uint8); {position: reason} of the unreadable
    ones, whose rows are left as they were."""
    def decode(i):
        try:
            out[i] = load_image(files[i], size, channels, resize, interpolation).numpy()
        except UnreadableImage as error:
            return str(error)
        return None

    return {i: reason for i, reason in enumerate(pool.map(decode, range(len(files)))) if reason is not None}


def decode_files(files: list[str], size: int, channels: int, resize: int | None = None,
                 interpolation: str = "bilinear", workers: int | None = None):
    """Decode many files into memory, each into its row of one tensor (never a list of images then a copy).

    Returns (uint8 N×C×S×S tensor of the readable files, their positions, {bad path: reason}).
    """
    import torch

    pixels = torch.empty(len(files), channels, size, size, dtype=torch.uint8)
    with decoding_pool(workers) as pool:
        bad = decode_into(pool, files, pixels.numpy(), size, channels, resize, interpolation)
    kept = [i for i in range(len(files)) if i not in bad]
    for row, position in enumerate(kept):  # the readable rows moved together in place
        if row != position:
            pixels[row] = pixels[position]
    return pixels[:len(kept)], torch.tensor(kept, dtype=torch.long), {files[i]: bad[i] for i in sorted(bad)}
