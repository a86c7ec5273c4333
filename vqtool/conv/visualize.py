"""PNG figures of what convolutions produce: single maps, grids of maps or filters, a kernel figure.

Every figure is for reading: a title saying what it shows, the sizes as width×height, a colour bar with its
scale, and the numbers themselves in the cells of tiny maps and kernels. Signed values (kernels, edge maps)
use a diverging scale with white at zero, so a Laplacian's thin edges and a blur's equal weights both show.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from vqtool.plots import png_figure, pyplot
from vqtool.runs.folder import is_run_folder, new_run_dir, run_folder_owning
from vqtool.errors import VQError

CELL_MIN = 48  # grid cells smaller than this (3×3 kernels, 7×7 maps) are enlarged by a whole factor
GAP = 2  # white pixels between grid cells
NUMBERED = 12  # maps up to this side have their values written out (in figures, and by conv apply)


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


def signed_scale(values: torch.Tensor, label: str) -> dict:
    """The colour scale of a map or kernel: white at zero and symmetric when it holds values of both signs (or is a
    kernel), else grey from 0 (or its minimum) to its maximum. A map's few extreme values would leave the rest
    near zero, so its scale ends at the 99.5th percentile of |value| and the label says so."""
    values = values.detach().float()
    low, high = float(values.min()), float(values.max())
    if low < 0 < high or label == "weight":
        peak = float(values.abs().flatten().quantile(0.995)) if values.numel() > 144 else max(-low, high)
        peak = peak or max(-low, high) or 1.0
        clipped = peak < max(-low, high)
        return {"cmap": "RdBu_r", "vmin": -peak, "vmax": peak, "label": f"{label} (white = 0)",
                "note": f"colours end at ±{peak:.3g} (99.5 % of |values|)" if clipped else ""}
    start = min(low, 0.0)
    return {"cmap": "gray", "vmin": start, "vmax": high if high > start else start + 1, "label": label, "note": ""}


def save_map(values: torch.Tensor, path: Path, title: str, *, replace: bool = False) -> Path:
    """One map as a titled figure with its colour scale; a tiny map (the demo's 3×3) has its numbers written in."""
    height, width = values.shape
    side = 5.0
    with png_figure(path, replace=replace, figsize=(side + 1.4, side * height / width + 0.8)) as (figure, axis):
        scale = signed_scale(values, "value")
        _draw(figure, axis, values, scale)
        axis.set_title(f"{title}\nmap {size_text(values)}, values {format_number(float(values.min()))} to "
                       f"{format_number(float(values.max()))}" + (f"\n{scale['note']}" if scale["note"] else ""),
                       fontsize=10)
    return path


def _draw(figure, axis, values: torch.Tensor, scale: dict) -> None:
    """``values`` with its colour bar, pixels as squares, numbers written in when few."""
    shown = axis.imshow(values.numpy(), cmap=scale["cmap"], vmin=scale["vmin"], vmax=scale["vmax"],
                        interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.03, label=scale["label"])
    if is_numbered(values):
        _annotate(axis, values, scale)


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

    import textwrap

    plt = pyplot()
    canvas, corners = value_canvas(cells)
    colour = plt.get_cmap(scale["cmap"]).with_extremes(bad="white")
    width = min(16.0, max(6.0, canvas.shape[1] / 45))
    title = textwrap.fill(title, width=int(width * 10))  # about ten characters an inch at 10 points: never clipped
    lines = title.count("\n") + 1
    cell_points = 72 * width * cells[0].shape[1] * cell_scale(*cells[0].shape[:2]) / canvas.shape[1]
    fontsize = min(11.0, max(7.0, cell_points / 3.5))  # channel numbers a third of a cell, 7 to 11 points
    with png_figure(path, replace=replace,
                    figsize=(width + 1.5, width * canvas.shape[0] / canvas.shape[1] + 0.5 + 0.25 * lines)) \
            as (figure, axis):
        axis.imshow(np.nan_to_num(canvas, nan=1.0) if canvas.ndim == 3 else canvas, cmap=colour,
                    vmin=scale["vmin"], vmax=scale["vmax"], interpolation="nearest")
        axis.set_axis_off()
        axis.set_title(title, fontsize=10)
        for channel, (top, left) in enumerate(corners):
            axis.text(left, top, str(channel), fontsize=fontsize, ha="left", va="top", color="black",
                      bbox={"facecolor": "white", "alpha": 0.75, "pad": 0.6, "linewidth": 0})
        bar = ScalarMappable(Normalize(scale["vmin"], scale["vmax"]), colour)
        figure.colorbar(bar, ax=axis, fraction=0.04, pad=0.02, label=scale["label"])
    return path


SCALES = ("shared", "channel")  # one colour scale for all channels, or each channel on its own


def save_feature_grid(maps: torch.Tensor, path: Path, title: str, scale: str = "channel", *,
                      replace: bool = False) -> Path:
    """C×H×W activations as a titled grid, one cell per channel: each channel stretched over its own min..max
    (``channel``: weak channels stay visible) or all on one scale (``shared``: strengths compare)."""
    values = maps.detach().float()
    channels, height, width = values.shape
    heading = f"{title}: {channels} channels of {width}×{height}"
    if scale == "channel":
        low = values.amin(dim=(1, 2), keepdim=True)
        spread = values.amax(dim=(1, 2), keepdim=True) - low
        cells = ((values - low) / torch.where(spread > 0, spread, torch.ones_like(spread))).numpy()
        return grid_figure(list(cells), path, f"{heading}; each channel on its own scale",
                           {"cmap": "viridis", "vmin": 0.0, "vmax": 1.0,
                            "label": "activation, from each channel's min (0) to its max (1)"}, replace=replace)
    low, high = float(values.min()), float(values.max())
    return grid_figure([channel.numpy() for channel in values], path, f"{heading}; one scale for all channels",
                       {"cmap": "viridis", "vmin": low, "vmax": high if high > low else low + 1,
                        "label": "activation"}, replace=replace)


def save_filter_grid(weight: torch.Tensor, path: Path, title: str, scale: str = "shared", *,
                     replace: bool = False) -> Path:
    """O×I×kH×kW conv weights as a titled grid of O cells: colour when I is 3, else the mean over input
    channels; zero is the middle of the colour scale, which is the largest |weight| of the layer (``shared``) or
    of each filter (``channel``)."""
    weight = weight.detach().float()
    outputs, inputs, height, width = weight.shape
    if scale == "channel":
        peaks = weight.abs().amax(dim=(1, 2, 3), keepdim=True)
        weight = weight / torch.where(peaks > 0, peaks, torch.ones_like(peaks))
        peak, unit, how = 1.0, "weight / the filter's largest |weight|", "each filter on its own scale"
    else:
        peak, unit, how = float(weight.abs().max()) or 1.0, "weight", "one scale for all filters"
    if inputs == 3:
        cells = [(kernel / (2 * peak) + 0.5).permute(1, 2, 0).numpy() for kernel in weight]
        what, cmap, label = "RGB", "gray", f"{unit}, per colour channel (grey = 0)"
    else:
        cells = [kernel.mean(0).numpy() for kernel in weight]
        what, cmap, label = f"mean over {inputs} input channels", "RdBu_r", f"{unit} (white = 0)"
    return grid_figure(cells, path, f"{title}: {outputs} filters of {width}×{height}, {what}; {how}",
                       {"cmap": cmap, "vmin": -peak, "vmax": peak, "label": label}, replace=replace)


def save_kernel_figure(image: torch.Tensor, maps: list[tuple[str, torch.Tensor, torch.Tensor]], path: Path,
                       source: str = "", *, replace: bool = False) -> Path:
    """One row per kernel: the input, the kernel, the map it gives (input ⋆ kernel = map), each with its colour
    bar; values are written in the cells of tiny ones, sizes are width×height."""
    with png_figure(path, replace=replace, nrows=len(maps), ncols=3, figsize=(12.0, 3.4 * len(maps)),
                    squeeze=False) as \
            (figure, axes):
        for row, (name, kernel, values) in enumerate(maps):
            panels = [(f"input {size_text(image)}" + (f"\n{source}" if source else ""), image,
                       {"cmap": "gray", "vmin": 0.0, "vmax": 1.0, "label": "brightness", "note": ""}),
                      (f"kernel {name} {size_text(kernel)}", kernel, signed_scale(kernel, "weight")),
                      (f"map: input ⋆ {name}, {size_text(values)}", values, signed_scale(values, "value"))]
            for axis, (title, shown, scale) in zip(axes[row], panels):
                if row and shown is image:  # the input once, at the top
                    axis.axis("off")
                    continue
                _draw(figure, axis, shown, scale)
                axis.set_title(title + (f"\n{scale['note']}" if scale["note"] else ""), fontsize=10)
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


def _annotate(axis, values: torch.Tensor, scale: dict) -> None:
    """Each value written in its cell, dark on light colours and light on dark ones."""
    colours = axis.images[-1].cmap
    for (row, column), value in np.ndenumerate(values.numpy()):
        position = (value - scale["vmin"]) / (scale["vmax"] - scale["vmin"])
        red, green, blue, _ = colours(float(np.clip(position, 0, 1)))
        light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5
        axis.text(column, row, format_number(value), ha="center", va="center", fontsize=9,
                  color="black" if light else "white")
