"""Datasets: what a source loads, and how a split becomes model input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vqtool.option_fields import option

if TYPE_CHECKING:  # torch loads when data does, not when the sources register (task_of runs before it)
    import torch

    from vqtool.data.rows import StoredRows


@dataclass
class Split:
    """One split: labels and either pixels (uint8 N×C×H×W, in memory or read from the store on disk) or image files.

    ``skipped`` holds what could not even be listed (unreadable subfolders: path
    -> reason) and ``rejected`` the rows of a list file that name no usable
    label (row -> reason); decoding reports both with the unreadable files.
    """

    labels: torch.Tensor
    pixels: torch.Tensor | StoredRows | None = None
    files: list[str] | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(
            labels=self.labels[index],
            pixels=None if self.pixels is None else _rows(self.pixels, index),
            files=None if self.files is None else [self.files[i] for i in index.tolist()],
        )


def _rows(pixels: torch.Tensor | StoredRows, index: torch.Tensor):
    """The rows at ``index``: a copy of in-memory pixels, a view of stored ones."""
    from vqtool.data.rows import StoredRows

    return pixels.subset(index) if isinstance(pixels, StoredRows) else pixels[index]


@dataclass
class Dataset:
    """What a dataset source returns.

    ``spec`` is enough to load the same splits again (it is stored in
    checkpoints so ``eval`` can find a model's own held-out data).
    """

    name: str
    classes: list[str]
    channels: int
    train: Split | None = None
    val: Split | None = None
    test: Split | None = None
    native_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    flips: bool = True
    spec: dict = field(default_factory=dict)

    def record(self) -> dict:
        """What a checkpoint keeps about its training data: the spec, and whether mirrored images are fair
        (``predict --tta`` flips only then)."""
        return {**self.spec, "flips": self.flips}

    def split(self, name: str) -> Split:
        chosen = getattr(self, name)
        if chosen is None:
            from vqtool.errors import VQError

            present = [split for split in ("train", "val", "test") if getattr(self, split) is not None]
            raise VQError(f"dataset {self.name} has no {name} split (it has {', '.join(present) or 'none'})",
                          usage=True)
        return chosen


@dataclass(frozen=True)
class DataOptions:
    """Options every source understands; their fields make the commands' options (vqtool.option_fields)."""

    data_dir: str | None = option(None, "Where the classics' files are, or are downloaded to.  [env: VQTOOL_DATA_DIR]",
                                  folder=True, envvar="VQTOOL_DATA_DIR")
    val_split: float | None = option(None, "Fraction held out for validation when the data has no val split "
                                     "(default 0.2 for one tree, else 0.1).", min=0, max=1, max_open=True)
    seed: int = option(0, "Seed for splits, init and shuffling.", show_default=True)
    workers: int | None = option(None, "Image-decoding threads.", min=1)
    cache_store: bool = option(True, "Keep decoded pixels in the store on disk ($VQTOOL_CACHE_DIR, default "
                               "~/.cache/vqtool) and read batches from it; --no-cache-store decodes into memory each "
                               "time.", show_default=True)  # False: decoded into memory each time
    strict: bool = option(False, "Fail on unreadable image files and folders instead of skipping them. Images over "
                          "$VQTOOL_MAX_IMAGE_PIXELS pixels (default 89,478,485) count as unreadable.")


def load_dataset(spec: str, options: DataOptions | None = None) -> Dataset:
    from vqtool.registry import get_dataset_source

    source = get_dataset_source(spec)
    return source.load(spec, options or DataOptions())


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split keeping each class's share: (kept indices, held-out indices)."""
    import torch  # here, not at the top: registering the sources (and so task_of) must not load torch

    generator = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for cls in torch.unique(labels).tolist():
        index = torch.nonzero(labels == cls).flatten()
        index = index[torch.randperm(len(index), generator=generator)]
        n_held = int(round(len(index) * fraction))
        if fraction > 0:  # at least one held out, and never a class's last training image
            n_held = min(max(n_held, 1), len(index) - 1)
        held.append(index[:n_held])
        kept.append(index[n_held:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def split_off(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(kept, held out); what could not be listed stays with the kept part, to be reported once."""
    kept, held = stratified_split(split.labels, fraction, seed)
    kept_split = split.subset(kept)
    kept_split.skipped, kept_split.rejected = split.skipped, split.rejected
    return kept_split, split.subset(held)
