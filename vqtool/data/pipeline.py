"""From a split to model input: fixed-size uint8 tensors in memory, batched augmentation on the device.

Images are decoded and resized once; each batch is then converted, augmented
and normalised as a whole on the training device, which is what makes small
datasets train faster than a per-image transform pipeline.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F

from vqtool.choices import AUGMENT_POLICIES
from vqtool.data import Split
from vqtool.data.images import RESAMPLING, decode_files
from vqtool.data.rows import StoredRows
from vqtool.data.store import stored_pixels
from vqtool.errors import VQError
from vqtool.reporter import SILENT, Reporter

MEMORY_BUDGET = 6 * 1024**3  # what --no-cache-store decodes into memory at most
PREFETCH_DEPTH = 3  # batches gathered ahead of the training step
POLICY_AUGMENTS = ("trivial", "randaugment", "autoaugment")  # data/policies.py; "basic" and "strong": Augmenter


@dataclass(frozen=True)
class Preprocess:
    """What every image goes through before the model; stored in checkpoints."""

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None  # shorter side before the centre crop; None = size
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocess":
        """The recipe as a checkpoint or export stored it; ValueError naming what does not fit."""
        if not isinstance(data, dict):
            raise ValueError("preprocess is not an object")
        known = {f.name for f in fields(cls)}
        if set(data) - known or {"size", "channels", "mean", "std"} - set(data):
            raise ValueError(f"preprocess must have size, channels, mean and std (and optionally resize, "
                             f"interpolation), not {', '.join(sorted(data)) or 'nothing'}")
        mean, std = data["mean"], data["std"]
        if not all(isinstance(v, (list, tuple)) and v and all(_is_number(x) for x in v) for v in (mean, std)):
            raise ValueError("preprocess mean and std must be lists of numbers")
        preprocess = cls(**{**data, "mean": tuple(mean), "std": tuple(std)})
        preprocess._check()
        return preprocess

    def _check(self) -> None:
        if not (_is_count(self.size) and _is_count(self.channels) and (self.resize is None or _is_count(self.resize))):
            raise ValueError("preprocess size, channels and resize must be positive whole numbers")
        if len(self.mean) != self.channels or len(self.std) != self.channels or min(self.std) <= 0:
            raise ValueError(f"preprocess needs one mean and one positive std per channel ({self.channels})")
        if self.interpolation not in RESAMPLING:
            raise ValueError(f"preprocess interpolation {self.interpolation!r} is not one of {', '.join(RESAMPLING)}")

    def at_size(self, size: int | None) -> "Preprocess":
        """The same recipe for another input side (the resize before the centre crop scales with it)."""
        if size is None or size == self.size:
            return self
        resize = None if self.resize is None else round(self.resize * size / self.size)
        return replace(self, size=size, resize=resize)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def decode_split(split: Split, preprocess: Preprocess, *, strict: bool = False, reporter: Reporter = SILENT,
                 workers: int | None = None, name: str | None = None, classes: list[str] | None = None,
                 every_class: bool = False, store: bool = True) -> Split:
    """The split as uint8 pixels of ``preprocess.size``: read from the store (decoded into it the first time),
    or, without ``store``, decoded into memory.

    Unreadable files (and subfolders that could not be listed, and list rows
    without a usable label) are dropped with a warning naming them, or stop the
    command with ``strict``. With ``classes``, a class that loses every image is
    warned about, or stops the command with ``every_class`` (a training split:
    it would train as a class with no images).
    """
    if split.pixels is not None:
        return Split(labels=split.labels, pixels=_resize_pixels(split.pixels, preprocess))
    which = f"the {name} split" if name else "the data"
    if len(split) == 0:
        _report_unreadable({}, split.skipped, split.rejected, strict, reporter)
        raise VQError(f"{which} has no images")
    recipe = (preprocess.size, preprocess.channels, preprocess.resize, preprocess.interpolation)
    if store:
        pixels, kept, bad = stored_pixels(split.files, split.labels, *recipe, workers=workers, reporter=reporter,
                                          what=which)
    else:
        estimate = len(split) * preprocess.channels * preprocess.size**2
        if estimate > MEMORY_BUDGET:
            raise VQError(f"{len(split)} images at {preprocess.size} px need {estimate / 1e9:.1f} GB in memory; "
                          f"use a smaller --imgsz, or leave out --no-cache-store to read them from the store on disk")
        pixels, kept, bad = decode_files(split.files, *recipe, workers)
    _report_unreadable(bad, split.skipped, split.rejected, strict, reporter)
    if len(kept) == 0:
        raise VQError(f"no readable images in {which} (all {len(split)} unreadable)")
    decoded = Split(labels=split.labels[kept], pixels=pixels, files=[split.files[i] for i in kept.tolist()])
    if classes is not None:
        _check_classes(split, decoded, classes, which, required=every_class, reporter=reporter)
    return decoded


def _report_unreadable(files: dict[str, str], folders: dict[str, str], rows: dict[str, str], strict: bool,
                       reporter: Reporter) -> None:
    """Unreadable files and folders and unusable list rows (-> reason), named: a warning, or the error with
    ``strict``."""
    if not files and not folders and not rows:
        return
    what = " and ".join(f"{len(found)} {kind}" for kind, found in
                        (("unreadable image file(s)", files), ("unreadable folder(s)", folders),
                         ("row(s) without a training label", rows)) if found)
    everything = {**folders, **rows, **files}
    listed = "; ".join(f"{path} ({reason})" for path, reason in list(everything.items())[:5])
    more = f" and {len(everything) - 5} more" if len(everything) > 5 else ""
    if strict:
        raise VQError(f"{what}: {listed}{more}")
    reporter.warn(f"skipped {what}: {listed}{more}")


def _check_classes(listed: Split, decoded: Split, classes: list[str], which: str, *, required: bool,
                   reporter: Reporter) -> None:
    """Classes that had files but kept no readable image."""
    lost = sorted(set(listed.labels.tolist()) - set(decoded.labels.tolist()))
    if not lost:
        return
    names = ", ".join(classes[i] for i in lost)
    message = f"class {names} has no readable image in {which} (every file of it was unreadable)"
    if required:
        raise VQError(f"{message}; it cannot be trained: fix or remove its files")
    reporter.warn(message)


def _resize_pixels(pixels: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    channels = pixels.shape[1]
    if channels != preprocess.channels:
        if preprocess.channels == 3 and channels == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        elif preprocess.channels == 1 and channels == 3:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            pixels = (pixels.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    if pixels.shape[-1] == preprocess.size and pixels.shape[-2] == preprocess.size:
        return pixels.contiguous()
    chunks = []
    for chunk in pixels.split(4096):
        resized = F.interpolate(chunk.float(), size=(preprocess.size, preprocess.size), mode="bilinear",
                                antialias=True, align_corners=False)
        chunks.append(resized.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(chunks)


def pixel_stats(pixels) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 pixels in [0, 1] units (on a sample of at most 10,000), read in chunks so
    that memory does not grow with the image size."""
    sample = torch.arange(0, len(pixels), max(1, len(pixels) // 10000))
    sums = torch.zeros(2, pixels.shape[1], dtype=torch.float64)
    for index in sample.split(256):  # float32 means per chunk (accurate), weighted in float64
        chunk = pixels[index].float().div_(255)
        weight = len(index) * pixels.shape[2] * pixels.shape[3]
        sums += torch.stack([chunk.mean(dim=(0, 2, 3)), chunk.square().mean(dim=(0, 2, 3))]).double() * weight
    count = len(sample) * pixels.shape[2] * pixels.shape[3]
    mean = sums[0] / count
    std = (sums[1] / count - mean.square()).clamp_min(0).mul(count / max(count - 1, 1)).sqrt().clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def batches(split: Split, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
            drop_last: bool = False, order: torch.Tensor | None = None, pin: bool = False):
    """(uint8 images, labels) batches of a split, in ``order`` (default: shuffled with ``generator``, or in turn).

    Batches of stored pixels are gathered ahead in a background thread, so
    reading the store overlaps the training step; ``pin`` gathers them into
    pinned memory (for an asynchronous copy to a GPU).
    """
    n = len(split)
    if order is None:
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = len(order) - len(order) % batch_size if drop_last and len(order) >= batch_size else len(order)
    indices = [order[start:start + batch_size] for start in range(0, stop, batch_size)]
    if isinstance(split.pixels, StoredRows):
        yield from prefetched(lambda index: (split.pixels.gather(index, pin), split.labels[index]), indices)
        return
    for index in indices:
        images = split.pixels[index]
        yield (images.pin_memory() if pin else images), split.labels[index]


def collect(blocks: Iterable[torch.Tensor], rows: int) -> torch.Tensor:
    """Row blocks, in order, copied into one CPU tensor of ``rows`` rows, allocated when the first block arrives.

    Results go into one block allocated once, not into a list joined at the
    end: small results that outlive their batch, allocated among each batch's
    large temporary tensors, pin the heap (glibc raises its mmap threshold
    once large blocks are freed, then serves them from the heap), which then
    grew by about one normalised batch per batch: 0.5 MB per image at 224 px,
    9.5 GB over 18,000 images. Copying also lets go of a result that is a
    view of a larger tensor (a transformer's class token).
    """
    out, start = None, 0
    for block in blocks:
        if out is None:
            out = torch.empty((rows, *block.shape[1:]), dtype=block.dtype)
        out[start:start + len(block)] = block
        start += len(block)
        del block  # freed before the next batch is computed, whose memory then reuses it
    return out if out is not None else torch.empty(0, 0)


_DONE = object()


def prefetched(make, items: list, depth: int = PREFETCH_DEPTH):
    """``make(item)`` for each item, computed up to ``depth`` items ahead in a background thread."""
    results: queue.Queue = queue.Queue(depth)
    stopping = threading.Event()

    def offer(value) -> bool:
        """Put ``value`` in the queue unless the consumer has stopped; whether it went in."""
        while not stopping.is_set():
            try:
                results.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not offer((make(item), None)):
                    return
        except BaseException as error:  # handed to the consumer, which raises it where the batch was wanted
            offer((None, error))
            return
        offer((_DONE, None))

    worker = threading.Thread(target=work, name="vqtool-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            made, error = results.get()
            if error is not None:
                raise error
            if made is _DONE:
                return
            yield made
    finally:  # the consumer stopped early (an error, a break): the worker stops too
        stopping.set()
        worker.join()


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    if drop_last and n >= batch_size:
        return n // batch_size
    return math.ceil(n / batch_size)


class Normalizer:
    """uint8 batch -> normalised float batch on the device (optionally augmented, channels_last)."""

    def __init__(self, preprocess: Preprocess, device: torch.device, channels_last: bool = False):
        """``channels_last`` suits torch's convolutions; an exported model's runtime takes the plain layout."""
        self.device = device
        self.mean = torch.tensor(preprocess.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(preprocess.std, device=device).view(1, -1, 1, 1)
        self.scale, self.shift = 1 / (255 * self.std), -self.mean / self.std  # uint8 to normalised in place, 2 passes
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor, augment: "Augmenter | None" = None) -> torch.Tensor:
        if self.device.type == "cuda":  # pinned memory: the copy runs asynchronously, overlapping the GPU's work
            images = images.pin_memory()
        x = images.to(self.device, torch.float32, non_blocking=True, copy=True)  # never the caller's tensor
        if augment is None:
            x = x.mul_(self.scale).add_(self.shift)
        else:
            x = (augment(x.div_(255)) - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """One batch from same-shaped image tensors (on the CPU). numpy's stack: torch's pays a thread-pool barrier per
    image, up to half a second a batch of 32 on a busy 2-core machine against 2 ms."""
    return torch.from_numpy(np.stack([image.numpy() for image in images]))


class ImageInputs:
    """A training run's input side for images: shuffling generator, augmentation and normalisation."""

    def __init__(self, preprocess: Preprocess, device: torch.device, *, augment: str = "none", flips: bool = False,
                 seed: int = 0, magnitude: int | None = None):
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self.normalize = Normalizer(preprocess, device, channels_last=True)
        self.augment = None
        if augment in POLICY_AUGMENTS:  # each image its own TrivialAugment/RandAugment/AutoAugment operations
            from vqtool.data.policies import PolicyAugmenter

            self.augment = PolicyAugmenter(augment, preprocess.size, flips, self.generator, magnitude)
        elif augment != "none":
            self.augment = Augmenter(augment, flips, self.generator)

    def train(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(images, self.augment)

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(images)


@dataclass(frozen=True)
class AugmentPolicy:
    rotate_degrees: float
    shift: float  # fraction of the image side
    zoom: float  # largest zoom-in factor (random crop of 1/zoom of the side)
    jitter: float  # brightness/contrast/saturation amplitude
    erase: float  # probability of erasing one random rectangle


POLICIES = {
    "basic": AugmentPolicy(rotate_degrees=10, shift=0.1, zoom=1.15, jitter=0.2, erase=0.0),
    "strong": AugmentPolicy(rotate_degrees=20, shift=0.15, zoom=1.5, jitter=0.4, erase=0.5),
}


class Augmenter:
    """Random affine (rotation, shift, zoom, optional horizontal flip), colour jitter and erasing, per sample.

    All samples of a batch are transformed in one ``grid_sample`` call.
    """

    def __init__(self, policy: str, flips: bool, generator: torch.Generator):
        if policy not in POLICIES:
            raise VQError(f"unknown augmentation {policy!r}; choose from {', '.join(AUGMENT_POLICIES)}", usage=True)
        self.policy = POLICIES[policy]
        self.flips = flips
        self.generator = generator

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) * (high - low) + low

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, p = x.shape[0], self.policy
        angle = self._uniform(n, -p.rotate_degrees, p.rotate_degrees) * math.pi / 180
        scale = 1 / self._uniform(n, 1.0, p.zoom)
        flip = torch.where(torch.rand(n, generator=self.generator) < 0.5, -1.0, 1.0) if self.flips else torch.ones(n)
        tx, ty = (self._uniform(n, -2 * p.shift, 2 * p.shift) for _ in range(2))
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if p.jitter:
            x = self._jitter(x)
        if p.erase:
            x = self._erase(x)
        return x

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        n, a = x.shape[0], self.policy.jitter
        brightness = self._uniform(n, 1 - a, 1 + a).view(n, 1, 1, 1).to(x.device)
        contrast = self._uniform(n, 1 - a, 1 + a).view(n, 1, 1, 1).to(x.device)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean) * brightness
        if x.shape[1] == 3:
            saturation = self._uniform(n, 1 - a, 1 + a).view(n, 1, 1, 1).to(x.device)
            grey = x.mean(dim=1, keepdim=True)
            x = (x - grey) * saturation + grey
        return x.clamp_(0, 1)

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        erase = torch.rand(n, generator=self.generator) < self.policy.erase
        eh = (self._uniform(n, 0.1, 0.4) * h).long()
        ew = (self._uniform(n, 0.1, 0.4) * w).long()
        top = (torch.rand(n, generator=self.generator) * (h - eh)).long()
        left = (torch.rand(n, generator=self.generator) * (w - ew)).long()
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        mask = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
                & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1)) & erase.view(n, 1, 1))
        return x.masked_fill(mask.unsqueeze(1).to(x.device), 0.5)
