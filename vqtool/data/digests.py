"""Digests of decoded images: which rows of the splits hold the same pixels.

A row's digest is a hash of its decoded pixels as stored (the preprocessing's
size); it is computed once per store entry and kept beside it, so the next
command on the same files reads it. Equal digests mean equal stored pixels:
`vqtool inspect` confirms them at full resolution, and `train`/`finetune` warn
when a held-out split holds copies of another split's images (they inflate
its accuracy).
"""

from __future__ import annotations

import hashlib

from vqtool.data import Split
from vqtool.data.store import remembered

CHUNK = 256  # rows read and hashed at a time: memory follows the image size, not the number of images


def row_digests(pixels) -> list[str]:
    """The digest of each row of ``pixels`` (uint8 N×C×H×W, in memory or stored), remembered beside the store."""
    return remembered(pixels, "digests", _digests)


def _digests(pixels) -> list[str]:
    import torch

    found = []
    for start in range(0, len(pixels), CHUNK):
        rows = pixels[torch.arange(start, min(start + CHUNK, len(pixels)))].contiguous().numpy()
        found.extend(hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in rows)
    return found


def crossing_copies(splits: dict[str, Split]) -> dict[tuple[str, str], int]:
    """(earlier split, later split) -> how many images of the later one have a pixel-identical copy in the earlier
    (train before val before test)."""
    seen: dict[str, set[str]] = {}
    crossing = {}
    for name, split in splits.items():
        digests = set(row_digests(split.pixels))
        for earlier, held in seen.items():
            if shared := len(digests & held):
                crossing[(earlier, name)] = shared
        seen[name] = digests
    return crossing


def leak_hint(splits: dict[str, Split], dataset: str) -> str | None:
    """One line when a split holds exact copies of another's images, else None."""
    crossing = crossing_copies(splits)
    if not crossing:
        return None
    described = ", ".join(f"{count} {later} image{'s' if count > 1 else ''} also in {earlier}"
                          for (earlier, later), count in crossing.items())
    return (f"exact duplicates across splits: {described} (they inflate the held-out accuracy); "
            f"`vqtool inspect {dataset}` names them")
