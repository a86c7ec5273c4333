"""PNG files of what convolutions produce: single maps, grids of maps or filters, a kernel figure.

Maps and grids are written pixel for pixel with Pillow, so their sizes are
known exactly (a map of H×W is an H×W PNG); only the captioned kernel figure
uses matplotlib.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqtool.plots import png_figure
from vqtool.runs.folder import atomic_save, new_run_dir
from vqtool.errors import VQError

CELL_MIN = 48  # grid cells smaller than this (3×3 kernels, 7×7 maps) are enlarged by a whole factor
GAP = 2  # white pixels between grid cells
NUMBERED = 12  # maps up to this side have their values written out (in figures, and by conv apply)


def output_folder(path: str | None, command: str) -> Path:
    """The folder named by ``--out`` (created, files in it overwritten), else a new runs/conv-<command>-<time>."""
    if path is None:
        return new_run_dir(f"conv-{command}", None)
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise VQError(f"{folder}: exists and is not a folder; choose another --out", usage=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_png(image: Image.Image, path: Path) -> Path:
    atomic_save(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


def stretch(values: torch.Tensor) -> np.ndarray:
    """Min..max -> 0..255 uint8, as ``imshow`` scales a map; a constant map is black."""
    values = values.detach().float()
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low) if high > low else torch.zeros_like(values)
    return (scaled * 255).round().to(torch.uint8).numpy()


def centred(values: torch.Tensor) -> np.ndarray:
    """-max|v|..max|v| -> 0..255 uint8: zero stays mid-grey, so a filter's sign is visible."""
    values = values.detach().float()
    peak = values.abs().max()
    scaled = values / (2 * peak) + 0.5 if peak > 0 else torch.full_like(values, 0.5)
    return (scaled * 255).round().to(torch.uint8).numpy()


def save_map(values: torch.Tensor, path: Path) -> Path:
    """One H×W map as an H×W greyscale PNG."""
    return save_png(Image.fromarray(stretch(values), mode="L"), path)


def cell_scale(height: int, width: int) -> int:
    return max(1, math.ceil(CELL_MIN / max(height, width)))


def tile(cells: list[np.ndarray]) -> Image.Image:
    """Equal-sized uint8 cells (H×W or H×W×3) in a near-square grid, enlarged to at least CELL_MIN pixels."""
    height, width = cells[0].shape[:2]
    scale = cell_scale(height, width)
    columns = math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / columns)
    cell_h, cell_w = height * scale, width * scale
    shape = (rows * cell_h + (rows - 1) * GAP, columns * cell_w + (columns - 1) * GAP, *cells[0].shape[2:])
    canvas = np.full(shape, 255, dtype=np.uint8)
    for index, cell in enumerate(cells):
        top, left = (index // columns) * (cell_h + GAP), (index % columns) * (cell_w + GAP)
        canvas[top:top + cell_h, left:left + cell_w] = cell.repeat(scale, axis=0).repeat(scale, axis=1)
    return Image.fromarray(canvas)


def save_feature_grid(maps: torch.Tensor, path: Path) -> Path:
    """C×H×W activations as a grid, each channel stretched to its own range."""
    return save_png(tile([stretch(channel) for channel in maps]), path)


def save_filter_grid(weight: torch.Tensor, path: Path) -> Path:
    """O×I×kH×kW conv weights as a grid of O cells: colour when I is 3, else the mean over input channels."""
    if weight.shape[1] == 3:
        cells = [centred(kernel).transpose(1, 2, 0) for kernel in weight]
    else:
        cells = [centred(kernel.mean(0)) for kernel in weight]
    return save_png(tile(cells), path)


def save_kernel_figure(image: torch.Tensor, maps: list[tuple[str, torch.Tensor]], path: Path) -> Path:
    """The input and each kernel's map side by side; the values are written in the cells of tiny images."""
    panels = [("input", image), *maps]
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    with png_figure(path, nrows=rows, ncols=columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False) as (_, axes):
        for axis in axes.flat:
            axis.axis("off")
        for axis, (title, values) in zip(axes.flat, panels):
            axis.imshow(values.numpy(), cmap="gray", interpolation="nearest")
            axis.set_title(title, fontsize=10)
            if is_numbered(values):
                _annotate(axis, values)
    return path


def is_numbered(values: torch.Tensor) -> bool:
    return max(values.shape) <= NUMBERED


def format_number(value: float) -> str:
    """Whole numbers as integers (the demo's maps), others to three significant digits."""
    return str(int(round(value))) if float(value).is_integer() else f"{value:.3g}"


def _annotate(axis, values: torch.Tensor) -> None:
    middle = (values.max() + values.min()) / 2
    for (row, column), value in np.ndenumerate(values.numpy()):
        axis.text(column, row, format_number(value), ha="center", va="center", fontsize=9,
                  color="black" if value > middle else "white")
