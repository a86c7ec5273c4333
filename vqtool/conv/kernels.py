"""Classic hand-made kernels slid over a greyscale image with ``torch.nn.functional.conv2d``.

Like every deep-learning library, ``conv2d`` computes a cross-correlation: the
kernel is not flipped, so ``[[-1,0,1],...]`` responds positively where the
image gets brighter to the right. Images are converted to greyscale in 0..1
(one input channel, so one map per kernel); padding adds zeros.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vqtool.conv.arithmetic import Layer, layer_output
from vqtool.conv.photos import read_photo
from vqtool.conv.visualize import format_number, is_numbered, save_kernel_figure, save_map, size_text
from vqtool.data.images import to_tensor
from vqtool.errors import VQError, suggest

KERNELS = {
    "sobel-x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel-y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "vertical-edge": [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]],
    "horizontal-edge": [[-1, -1, -1], [0, 0, 0], [1, 1, 1]],
    "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "blur": [[1 / 9] * 3] * 3,
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
}
PHOTO_KERNELS = ("sobel-x", "sobel-y", "laplacian", "blur", "sharpen", "emboss")
DEMO_KERNELS = ("vertical-edge",)


def square_demo() -> torch.Tensor:
    """5×5 zeros with a 3×3 square of ones in the middle: every edge of it is visible in a 3×3 map."""
    image = torch.zeros(5, 5)
    image[1:4, 1:4] = 1
    return image


DEMOS = {"square": square_demo}


def load_input(path: str | None, demo: str | None) -> tuple[torch.Tensor, str]:
    """(H×W image in 0..1, what it is): a demo image, an image file, or the sample photo."""
    if demo is None:
        return read_greyscale(path)
    if path is not None:
        raise VQError("give an IMAGE or --demo, not both", usage=True)
    if demo not in DEMOS:
        raise VQError(f"unknown demo {demo!r}{suggest(demo, DEMOS)}; choose from {', '.join(DEMOS)}", usage=True)
    return DEMOS[demo](), f"demo {demo}"


def default_kernels(demo: str | None) -> tuple[str, ...]:
    return DEMO_KERNELS if demo else PHOTO_KERNELS


@dataclass
class FeatureMap:
    name: str
    kernel: torch.Tensor
    values: torch.Tensor


def parse_kernels(specs: list[str]) -> list[tuple[str, torch.Tensor]]:
    """(name, kernel) for each --kernel: a name from KERNELS or a literal like ``[[-1,0,1],[-1,0,1],[-1,0,1]]``.

    Literals are named custom-1, custom-2...; a spec given twice is used once.
    """
    kernels, literals = [], 0
    for spec in dict.fromkeys(specs):
        if spec.lstrip().startswith("["):
            literals += 1
            kernels.append((f"custom-{literals}", parse_literal(spec)))
        elif spec in KERNELS:
            kernels.append((spec, torch.tensor(KERNELS[spec], dtype=torch.float32)))
        else:
            raise VQError(f"unknown kernel {spec!r}{suggest(spec, KERNELS)}; choose from {', '.join(KERNELS)} "
                          f"or write one as [[-1,0,1],[-1,0,1],[-1,0,1]]", usage=True)
    return kernels


def parse_literal(text: str) -> torch.Tensor:
    """A kernel written as rows of numbers (JSON), e.g. ``[[0,1,0],[1,-4,1],[0,1,0]]``."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise VQError(f"cannot read kernel {text!r} ({error.msg}); write rows of numbers like "
                      f"[[-1,0,1],[-1,0,1],[-1,0,1]]", usage=True) from error
    valid = (isinstance(rows, list) and rows and all(isinstance(row, list) and row for row in rows)
             and all(isinstance(v, (int, float)) and not isinstance(v, bool) for row in rows for v in row))
    if not valid:
        raise VQError(f"kernel {text!r} must be a list of rows of numbers, like [[-1,0,1],[-1,0,1],[-1,0,1]]",
                      usage=True)
    if len({len(row) for row in rows}) != 1:
        raise VQError(f"kernel {text!r}: every row must have the same length", usage=True)
    return torch.tensor(rows, dtype=torch.float32)


def read_greyscale(path: str | None) -> tuple[torch.Tensor, str]:
    """(H×W float tensor in 0..1, where it came from) for an image file, or the sample photo when None."""
    image, source = read_photo(path, channels=1)
    return to_tensor(image)[0].float() / 255, source


def apply_kernels(image: torch.Tensor, kernels: list[tuple[str, torch.Tensor]], stride: int = 1,
                  padding: int = 0) -> list[FeatureMap]:
    """Each kernel over an H×W image: one map each, sized by the conv arithmetic."""
    maps = []
    for name, kernel in kernels:
        for side, kernel_side in zip(image.shape, kernel.shape):
            layer_output(side, Layer("conv", kernel_side, stride, padding))  # a clear error before conv2d's own
        values = F.conv2d(image[None, None], kernel[None, None], stride=stride, padding=padding)[0, 0]
        maps.append(FeatureMap(name, kernel, values))
    return maps


def save_maps(image: torch.Tensor, maps: list[FeatureMap], folder: Path, source: str = "input", *,
              replace: bool = False) -> list[Path]:
    """``<kernel>.png`` per map (titled, with its scale), then ``figure.png``: the input, each kernel and its map."""
    files = [save_map(feature.values, folder / f"{feature.name}.png", f"{source} ⋆ {feature.name}", replace=replace)
             for feature in maps]
    figure = save_kernel_figure(image, [(feature.name, feature.kernel, feature.values) for feature in maps],
                                folder / "figure.png", source, replace=replace)
    return [*files, figure]


def describe(image: torch.Tensor, maps: list[FeatureMap]) -> list[str]:
    """The numbers of a tiny input and of its maps, for the terminal; nothing for a photo."""
    if not is_numbered(image):
        return []
    lines = [f"input {size_text(image)}:", *format_grid(image)]
    for feature in maps:
        lines += ["", f"kernel {feature.name} {size_text(feature.kernel)}:", *format_grid(feature.kernel),
                  "", f"map: input ⋆ {feature.name}, {size_text(feature.values)}:", *format_grid(feature.values)]
    return lines


def map_document(feature: FeatureMap, path: Path) -> dict:
    """One map in ``conv apply --json``; its values only when it is small enough to read."""
    return {"name": feature.name, "kernel": feature.kernel.tolist(), "shape": list(feature.values.shape),
            "file": str(path), "values": feature.values.tolist() if is_numbered(feature.values) else None}


def format_grid(values: torch.Tensor) -> list[str]:
    """A small map as right-aligned rows of numbers (whole numbers without decimals)."""
    cells = [[format_number(v) for v in row] for row in values.tolist()]
    width = max(len(cell) for row in cells for cell in row)
    return [" ".join(cell.rjust(width) for cell in row) for row in cells]
