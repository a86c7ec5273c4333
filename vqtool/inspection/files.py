"""File-level checks from image headers: mode, bit depth, size and aspect ratio (nothing is decoded)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from PIL import Image

from vqtool.files import open_regular

TINY_SIDE = 32  # pixels: a shorter side below this holds little for a 224 px backbone
EXTREME_ASPECT = 4.0  # longer side over shorter side
USUAL_MODES = {"RGB": 8, "L": 8, "RGBA": 8, "P": 8, "LA": 8, "1": 1, "CMYK": 8, "YCbCr": 8, "I;16": 16,
               "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}
HEADER_LIMIT = 1 << 31


@dataclass
class Header:
    mode: str
    width: int
    height: int
    format: str | None

    @property
    def bits(self) -> int | None:
        return USUAL_MODES.get(self.mode)

    def oddities(self, usual_mode: str, usual_side: float) -> list[str]:
        """What is unusual about the file among files mostly of ``usual_mode`` and a median shorter side of
        ``usual_side`` (an empty list when nothing is): another mode, or a bit depth other than 8; a small image among
        larger ones; an extreme aspect ratio."""
        found = []
        if self.mode != usual_mode or (self.bits or 8) != 8:
            found.append(f"mode {self.mode}" + (f" ({self.bits}-bit)" if self.bits and self.bits != 8 else ""))
        if min(self.width, self.height) < TINY_SIDE and 2 * min(self.width, self.height) <= usual_side:
            found.append(f"tiny {self.width}x{self.height}")
        aspect = max(self.width, self.height) / max(1, min(self.width, self.height))
        if aspect >= EXTREME_ASPECT:
            found.append(f"aspect {aspect:.1f}:1")
        return found


def read_header(path: str) -> Header | None:
    """The file's header, or None when it cannot be read (decoding reports why)."""
    try:
        with open_regular(path, HEADER_LIMIT) as file, Image.open(file) as image:
            return Header(image.mode, image.width, image.height, image.format)
    except Exception:  # noqa: BLE001 - whatever a decoder raises on a bad file: the decoding pass names it
        return None


def size_summary(headers: list[Header]) -> dict | None:
    """Smallest, median and largest width and height."""
    if not headers:
        return None
    widths, heights = [h.width for h in headers], [h.height for h in headers]
    return {"width": {"min": min(widths), "median": statistics.median(widths), "max": max(widths)},
            "height": {"min": min(heights), "median": statistics.median(heights), "max": max(heights)}}
