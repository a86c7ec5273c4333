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

from vqtool.plots import png_figure, pyplot
from vqtool.runs.folder import atomic_save, is_run_folder, new_run_dir, run_folder_owning
from vqtool.errors import VQError

CELL_MIN = 48  # grid cells smaller than this (3×3 kernels, 7×7 maps) are enlarged by a whole factor
GAP = 2  # white pixels between grid cells
NUMBERED = 12  # maps up to this side have their values written out (in figures, and by conv apply)
TINY_MAP_SIDE = 192  # the side a map of up to NUMBERED values is enlarged to in its own PNG


def output_folder(path: str | None, command: str) -> Path:
    """The folder named by ``--out`` (created), else a new runs/conv-<command>-<time>; never a run folder. Its
    same-named files are replaced only with --overwrite (the writers' ``replace``)."""
    if path is None:
        return new_run_dir(f"conv-{command}", None)
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise VQError(f"{folder}: exists and is not a folder; choose another --out", usage=True)
    if folder.is_dir() and (is_run_folder(folder) or run_folder_owning(folder) is not None):
        raise VQError(f"--out {folder}: a run folder (or inside one); vqtool writes nothing into it from outside",
                      usage=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_png(image: Image.Image, path: Path, *, replace: bool = False) -> Path:
    atomic_save(path, lambda tmp: image.save(tmp, format="PNG"), replace=replace)
    return path


def stretch(values: torch.Tensor) -> np.ndarray:
    """Min..max -> 0..255 uint8, as ``imshow`` scales a map; a constant map is black."""
    values = values.detach().float()
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low) if high > low else torch.zeros_like(values)
    return (scaled * 255).round().to(torch.uint8).numpy()


def save_map(values: torch.Tensor, path: Path, *, replace: bool = False) -> Path:
    """One H×W map as an H×W greyscale PNG; a tiny map (the demo's 3×3) enlarged by a whole factor, nearest
    neighbour, to about TINY_MAP_SIDE pixels, so each value is a square one can see."""
    pixels = stretch(values)
    if is_numbered(values):
        scale = math.ceil(TINY_MAP_SIDE / max(pixels.shape))
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    return save_png(Image.fromarray(pixels, mode="L"), path, replace=replace)


def cell_scale(height: int, width: int) -> int:
    return max(1, math.ceil(CELL_MIN / max(height, width)))


def value_canvas(cells: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Equal-sized float cells (H×W, or H×W×3 in 0..1) in a near-square grid, each enlarged by a whole
    factor to at least CELL_MIN pixels; gaps are NaN (drawn white). Returns the canvas and each cell's
    top-left corner."""
    height, width = cells[0].shape[:2]
    scale = cell_scale(height, width)
    columns = math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / columns)
    cell_h, cell_w = height * scale, width * scale
    canvas = np.full((rows * cell_h + (rows - 1) * GAP, columns * cell_w + (columns - 1) * GAP,
                      *cells[0].shape[2:]), np.nan)
    corners = []
    for index, cell in enumerate(cells):
        top, left = (index // columns) * (cell_h + GAP), (index % columns) * (cell_w + GAP)
        canvas[top:top + cell_h, left:left + cell_w] = cell.repeat(scale, axis=0).repeat(scale, axis=1)
        corners.append((top, left))
    return canvas, corners


def grid_figure(cells: list[np.ndarray], path: Path, title: str, scale: dict, *, replace: bool = False) -> Path:
    """The cells in a grid with a title, each cell's channel number and a colour scale.

    ``scale``: ``cmap``, ``vmin``, ``vmax`` and ``label`` of the colour bar; RGB cells (H×W×3, already in 0..1)
    are drawn as they are and the bar shows how ``vmin..vmax`` maps to each colour channel.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    plt = pyplot()
    canvas, corners = value_canvas(cells)
    colour = plt.get_cmap(scale["cmap"]).with_extremes(bad="white")
    width = min(16.0, max(5.0, canvas.shape[1] / 45))
    with png_figure(path, replace=replace, figsize=(width + 1.5, width * canvas.shape[0] / canvas.shape[1] + 0.9)) as (figure, axis):
        axis.imshow(np.nan_to_num(canvas, nan=1.0) if canvas.ndim == 3 else canvas, cmap=colour,
                    vmin=scale["vmin"], vmax=scale["vmax"], interpolation="nearest")
        axis.set_axis_off()
        axis.set_title(title, fontsize=10)
        for channel, (top, left) in enumerate(corners):
            axis.text(left, top, str(channel), fontsize=6, ha="left", va="top", color="black",
                      bbox={"facecolor": "white", "alpha": 0.7, "pad": 0.5, "linewidth": 0})
        bar = ScalarMappable(Normalize(scale["vmin"], scale["vmax"]), colour)
        figure.colorbar(bar, ax=axis, fraction=0.04, pad=0.02, label=scale["label"])
    return path


def save_feature_grid(maps: torch.Tensor, path: Path, title: str, *, replace: bool = False) -> Path:
    """C×H×W activations as a titled grid, one cell per channel, on one colour scale for all channels."""
    values = maps.detach().float()
    low, high = float(values.min()), float(values.max())
    channels, height, width = values.shape
    return grid_figure([channel.numpy() for channel in values], path,
                       f"{title}: {channels} channels of {width}×{height}",
                       {"cmap": "viridis", "vmin": low, "vmax": high if high > low else low + 1,
                        "label": "activation"}, replace=replace)


def save_filter_grid(weight: torch.Tensor, path: Path, title: str, *, replace: bool = False) -> Path:
    """O×I×kH×kW conv weights as a titled grid of O cells: colour when I is 3, else the mean over input
    channels; zero is the middle of the colour scale."""
    weight = weight.detach().float()
    outputs, inputs, height, width = weight.shape
    peak = float(weight.abs().max()) or 1.0
    if inputs == 3:
        cells = [(kernel / (2 * peak) + 0.5).permute(1, 2, 0).numpy() for kernel in weight]
        what, cmap, label = "RGB", "gray", "weight, per colour channel (grey = 0)"
    else:
        cells = [kernel.mean(0).numpy() for kernel in weight]
        what, cmap, label = f"mean over {inputs} input channels", "RdBu_r", "weight (white = 0)"
    return grid_figure(cells, path, f"{title}: {outputs} filters of {width}×{height}, {what}",
                       {"cmap": cmap, "vmin": -peak, "vmax": peak, "label": label}, replace=replace)


def save_kernel_figure(image: torch.Tensor, maps: list[tuple[str, torch.Tensor, torch.Tensor]], path: Path, *,
                       replace: bool = False) -> Path:
    """One row per kernel: the input, the kernel, the map it gives (input ⋆ kernel = map); values are written in
    the cells of tiny ones, sizes are width×height."""
    with png_figure(path, replace=replace, nrows=len(maps), ncols=3, figsize=(9.6, 3.2 * len(maps)), squeeze=False) as (_, axes):
        for row, (name, kernel, values) in enumerate(maps):
            panels = [(f"input {size_text(image)}", image), (f"kernel {name} {size_text(kernel)}", kernel),
                      (f"map {size_text(values)}", values)]
            for axis, (title, shown) in zip(axes[row], panels):
                axis.axis("off")
                if row and shown is image:  # the input once, at the top
                    continue
                axis.imshow(shown.numpy(), cmap="gray", interpolation="nearest")
                axis.set_title(title, fontsize=10)
                if is_numbered(shown):
                    _annotate(axis, shown)
    return path


def size_text(values: torch.Tensor) -> str:
    """A map's size as width×height."""
    height, width = values.shape[-2:]
    return f"{width}×{height}"


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
