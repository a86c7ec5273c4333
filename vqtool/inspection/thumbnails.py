"""Near copies told from look-alikes in pixels: small greyscale thumbnails of each image, compared two ways.

An embedding says two images show alike things, not that one is a copy of the
other. On photos that is nearly the same thing, but on tiny greyscale items
(Fashion-MNIST's 28 px) most distinct items of a class sit above any cosine
threshold that keeps the copies, and the backbone barely knows an item from
its half-size copy. So (benchmarks/inspect_quality.py copies, both data sets):

- an embedding candidate is a copy only when the *detail* of the two images
  matches: the cosine similarity of the gradients of DETAIL_SIDE thumbnails, the
  second image shifted by up to one thumbnail pixel (what a 5 % crop moves) and
  mirrored, the best alignment counting: on cats_vs_dogs the copies score 0.55
  to 1 and of 4,300 pairs of distinct photos one (a real near duplicate) 0.5 or more.
- the thumbnails' own nearest neighbours are candidates too, a copy when their
  LAYOUT_SIDE thumbnails (light and dark where they are) correlate at
  LAYOUT_MATCH or more: a half-size or recompressed copy keeps its layout
  exactly, which distinct photos do not (distinct 28 px items of one class,
  plain trousers say, sometimes do: docs/guides/inspect.md has the figures).

Thumbnails are computed once per store entry and kept beside it, like the row
digests, so a second inspection reads them.
"""

from __future__ import annotations

import base64

import numpy as np
import torch
import torch.nn.functional as F

from vqtool.data.store import remembered

DETAIL_SIDE = 24  # fine enough that distinct photos differ in detail, coarse enough that a recompression does not
LAYOUT_SIDE = 12  # coarse enough that a half-size copy of a 28 px item keeps its layout exactly
DETAIL_MATCH = 0.5  # gradients' cosine similarity from which an embedding candidate is a copy
LAYOUT_MATCH = 0.98  # thumbnail correlation from which a thumbnail candidate is a copy
LAYOUT_SEARCH = 0.9  # the thumbnails' neighbours looked at (mirror-symmetrised rows: a little under LAYOUT_MATCH)
READ_ROWS = 256  # stored rows read at a time: memory follows the image size, not the number of images
PAIRS = 4096  # pairs compared at a time


def thumbnails(pixels) -> torch.Tensor:
    """N × DETAIL_SIDE × DETAIL_SIDE uint8 greyscale thumbnails of uint8 N×C×H×W ``pixels`` (in memory or stored),
    remembered beside the store (as base64 text: a list of numbers would take 1 GB of Python objects at 50,000)."""
    text = remembered(pixels, f"thumbnails{DETAIL_SIDE}px",
                      lambda stored: base64.b64encode(_thumbnails(stored).numpy().tobytes()).decode())
    rows = np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(-1, DETAIL_SIDE, DETAIL_SIDE)
    return torch.from_numpy(rows.copy())


def _thumbnails(pixels) -> torch.Tensor:
    out = torch.empty((len(pixels), DETAIL_SIDE, DETAIL_SIDE), dtype=torch.uint8)
    for start in range(0, len(pixels), READ_ROWS):
        index = torch.arange(start, min(start + READ_ROWS, len(pixels)))
        grey = pixels[index].float().mean(dim=1, keepdim=True)
        out[index] = F.adaptive_avg_pool2d(grey, DETAIL_SIDE)[:, 0].round().to(torch.uint8)
    return out


def layout_vectors(thumbs: torch.Tensor, mirrored: bool) -> torch.Tensor:
    """Unit rows whose cosine similarity is the LAYOUT_SIDE thumbnails' correlation; with ``mirrored``, of each
    thumbnail plus its mirror image, so that a mirrored copy's row is its original's."""
    coarse = _coarse(thumbs)
    return _unit(coarse + coarse.flip(-1) if mirrored else coarse)


def layout_similarity(thumbs: torch.Tensor, pairs: list[tuple[int, int]], mirrored: bool) -> list[float]:
    """For each (i, j): the correlation of the LAYOUT_SIDE thumbnails (the better of j and its mirror image)."""
    coarse = _coarse(thumbs)
    rows, flipped = _unit(coarse), _unit(coarse.flip(-1))
    found = []
    for first, second in _chunks(pairs):
        similarity = (rows[first] * rows[second]).sum(dim=1)
        if mirrored:
            similarity = torch.maximum(similarity, (rows[first] * flipped[second]).sum(dim=1))
        found += similarity.tolist()
    return [round(value, 4) for value in found]


def detail_similarity(thumbs: torch.Tensor, pairs: list[tuple[int, int]], mirrored: bool) -> list[float]:
    """For each (i, j): the best cosine similarity of the gradients of thumbnail i's centre with those of thumbnail
    j's windows shifted by up to one pixel (and, with ``mirrored``, of its mirror image's)."""
    found = []
    for first, second in _chunks(pairs):
        centre, other = thumbs[first, 1:-1, 1:-1].float(), thumbs[second].float()
        best = _shifted_cosine(centre, other)
        if mirrored:
            best = torch.maximum(best, _shifted_cosine(centre, other.flip(-1)))
        found += best.tolist()
    return [round(value, 4) for value in found]


def _shifted_cosine(centre: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """The best over the 9 windows of ``other`` (P × (h+2) × (w+2)) the size of ``centre`` (P × h × w): the cosine
    similarity of their gradients."""
    products = energies = 0
    centre_energy = torch.zeros(len(centre))
    for axis in (-1, -2):
        kernel, field = centre.diff(dim=axis), other.diff(dim=axis)
        size = kernel.shape[1:]
        windows = field.unfold(1, size[0], 1).unfold(2, size[1], 1)  # P × 3 × 3 × h × w, a view
        products = products + torch.einsum("pyxhw,phw->pyx", windows, kernel)
        energies = energies + F.avg_pool2d(field.square()[:, None], size, stride=1)[:, 0] * size.numel()
        centre_energy += kernel.square().sum(dim=(1, 2))
    cosine = products / (centre_energy[:, None, None] * energies).sqrt().clamp_min(1e-6)
    return cosine.flatten(1).amax(dim=1)


def _chunks(pairs: list[tuple[int, int]]):
    for start in range(0, len(pairs), PAIRS):
        first, second = torch.tensor(pairs[start:start + PAIRS], dtype=torch.long).reshape(-1, 2).T
        yield first, second


def _coarse(thumbs: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(thumbs.float()[:, None], LAYOUT_SIDE)[:, 0]


def _unit(rows: torch.Tensor) -> torch.Tensor:
    """Each row flattened, less its mean, at unit length (a flat row stays zero: it correlates with nothing)."""
    flat = rows.flatten(1)
    return F.normalize(flat - flat.mean(dim=1, keepdim=True), dim=1)
