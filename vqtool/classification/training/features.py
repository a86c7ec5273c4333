"""The frozen-backbone feature cache: the backbone runs once per image (and view), then only the head trains.

With the backbone frozen, its output for an image never changes, so computing
it every epoch is wasted work; computing it again in the next run is too, so
the features are kept in the store (:mod:`vqtool.data.store`), keyed by the
images, the backbone's weights and the views: a second fine-tune of the same
data and backbone (another head, LR or epoch count) skips the backbone pass.
Each training image is passed through once per
cached view (views differ only when training augments), the validation
images once; each epoch then picks one view per image at random. A cached
split is an ordinary :class:`~vqtool.data.Split` whose ``pixels`` hold
features (N × views × the head's input shape, float32) instead of images.

On the CPU the backbone runs through ONNX Runtime where it is installed:
2 to 3 times faster than eager torch for the depthwise convolutions of
mobile architectures (EfficientNet-Lite0: about 100 vs 38 images/s on two
cores). It is used only when its features agree with torch's on a first
batch; otherwise, or when the export fails, torch computes them.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from vqtool.data import Split
from vqtool.data.pipeline import ImageInputs, batches, collect, num_batches
from vqtool.data.store import Entry, content_key, save_array, save_rows
from vqtool.compute import distributed
from vqtool.errors import VQError, first_line
from vqtool.models.hooks import watching
from vqtool.reporter import Reporter

Backbone = Callable[[torch.Tensor], torch.Tensor]  # a normalised image batch to the head's inputs
# Two cores run a 224 px batch of 16 faster per image than one of 64, which no longer fits in their caches.
CPU_BATCH = 16
DEVICE_BATCH = 128
AGREEMENT = {"rtol": 1e-3, "atol": 1e-4}  # float32 kernels of two runtimes differ in the last digits


class FeatureInputs:
    """A training run's input side for cached features: one random view per image, view 0 to evaluate.

    Its epochs train the head alone (``head_only``); ``backbone_seconds`` is what computing the cache took, which
    the run's whole-job throughput includes.
    """

    head_only = True

    def __init__(self, device: torch.device, seed: int = 0, backbone_seconds: float = 0.0):
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self.backbone_seconds = backbone_seconds

    def train(self, features: torch.Tensor) -> torch.Tensor:
        view = torch.randint(features.shape[1], (len(features),), generator=self.generator)
        return features[torch.arange(len(features)), view].to(self.device, non_blocking=True)

    def eval(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, 0].to(self.device, non_blocking=True)


@contextmanager
def frozen_backbone(model: nn.Module, head: str, sample: torch.Tensor, reporter: Reporter) -> Iterator[Backbone]:
    """What computes the inputs of ``model``'s ``head``: ONNX Runtime where it agrees with torch on ``sample``
    (a normalised batch), else the model itself with a hook on the head."""
    model.eval()
    with _hooked(model, head) as in_torch:
        with torch.no_grad():
            reference = in_torch(sample)
        in_onnx, reason = _onnx_backbone(model, head, sample, reference) if sample.device.type == "cpu" \
            else (None, "not on the CPU")
        reporter.log(f"feature cache: backbone runs in {'onnxruntime' if in_onnx else f'torch ({reason})'}")
        yield in_onnx or in_torch


@contextmanager
def _hooked(model: nn.Module, head: str) -> Iterator[Backbone]:
    captured = []

    def features(batch: torch.Tensor) -> torch.Tensor:
        captured.clear()
        model(batch)
        return captured[0].float().cpu()

    with watching({head: model.get_submodule(head)}, lambda name, module, inputs, _: captured.append(inputs[0]),
                  before=True):
        yield features


def _onnx_backbone(model, head, sample, reference) -> tuple[Backbone | None, str]:
    """(ONNX Runtime session of ``model`` with its head removed, "") or (None, why not)."""
    if len(sample) < 2:  # a batch of one would be specialised into the traced graph
        return None, "too few images"
    from vqtool.exporting import require
    from vqtool.classification.export.formats import to_onnx
    from vqtool.classification.inference.exported import OnnxModel

    try:
        for package in ("onnx", "onnxruntime"):
            require(package, "the faster feature cache")
    except VQError:
        return None, "onnx and onnxruntime are not installed"

    original = model.get_submodule(head)
    buffer = io.BytesIO()
    model.set_submodule(head, nn.Identity())
    try:
        to_onnx(model, sample.contiguous(), buffer)
        backbone = OnnxModel(buffer.getvalue())
        features = backbone(sample)
    except Exception as error:  # exporters fail in many ways on exotic layers; torch still computes the features
        return None, f"ONNX export failed: {first_line(error)[:120]}"
    finally:
        model.set_submodule(head, original)
    if features.shape != reference.shape or not torch.allclose(features, reference, **AGREEMENT):
        return None, "ONNX features differ from torch's"
    return backbone, ""


def cache_batch(device: torch.device) -> int:
    return CPU_BATCH if device.type == "cpu" else DEVICE_BATCH


def cache_features(backbone: Backbone, split: Split, images: ImageInputs, views: int, *, augment: bool,
                   reporter: Reporter, description: str) -> Split:
    """``split``'s images as the features the head receives, in memory: ``views`` passes, augmented when
    ``augment``.

    Under torchrun each rank computes the features of its share of the images,
    then all ranks exchange them, so every rank holds the whole cache.
    """
    share = split
    if distributed.is_distributed():
        share = split.subset(torch.arange(distributed.rank(), len(split), distributed.world_size()))
    with reporter.progress(description, num_batches(len(share), cache_batch(images.device))) as advance:
        features = collect(_feature_blocks(backbone, share, images, views, augment, advance), len(share))
    if not distributed.is_distributed():
        return Split(labels=split.labels, pixels=features)
    return Split(labels=distributed.gather(share.labels), pixels=distributed.gather(features))


@torch.no_grad()
def _feature_blocks(backbone, split, images, views, augment, advance) -> Iterator[torch.Tensor]:
    """The features of each batch of ``split``'s images: B × views × the head's input shape."""
    to_input = images.train if augment else images.eval
    for stored, _ in batches(split, cache_batch(images.device)):
        yield torch.stack([backbone(to_input(stored)) for _ in range(views)], dim=1)
        advance()


@dataclass
class Wanted:
    """Features one split needs: of which images, how many views, augmented or not."""

    split: Split
    views: int
    augment: bool


def features_of(model: nn.Module, head: str, wanted: dict[str, Wanted], images: ImageInputs, recipe: dict,
                reporter: Reporter, store: bool = True) -> dict[str, Split]:
    """Each wanted split's features: read from the store, or computed by the frozen backbone (and stored, with
    ``store``).

    ``recipe`` is what else the features depend on (the preprocessing, the
    augmentation policy and seed); the backbone's weights are hashed here.
    """
    entries = {}
    if store:
        weights = _weights_digest(model, head)
        entries = {name: _feature_entry(weights, want, recipe) for name, want in wanted.items()}
    found = {name: distributed.shared(entry.index()) for name, entry in entries.items()}  # rank 0 decides for all
    for name, entry in entries.items():
        if entry.damage:
            reporter.warn(f"store: {entry.folder} is damaged ({entry.damage}); computing the {name} features again")
    ready = {name: Split(labels=wanted[name].split.labels, pixels=entries[name].open(index))
             for name, index in found.items() if index is not None}
    if ready:
        reporter.log(f"feature cache: {' and '.join(ready)} features read from the store (no backbone pass)")
    missing = [name for name in wanted if name not in ready]
    if not missing:
        return ready
    sample = images.eval(next(iter(wanted.values())).split.pixels[:cache_batch(images.device)])
    with frozen_backbone(model, head, sample, reporter) as backbone:
        for name in missing:
            ready[name] = _computed(backbone, name, wanted[name], images, entries.get(name), recipe, reporter)
    return ready


def _computed(backbone, name: str, want: Wanted, images: ImageInputs, entry: Entry | None, recipe: dict,
              reporter: Reporter) -> Split:
    """One split's features from the backbone: written into the store ``entry`` batch by batch and then read
    from it like a stored entry (never all in memory), or without an entry (or under torchrun, where the ranks
    exchange them) kept in memory."""
    description = f"caching {name} features"
    if entry is None or distributed.is_distributed():
        split = cache_features(backbone, want.split, images, want.views, augment=want.augment, reporter=reporter,
                               description=description)
        if entry is not None and distributed.is_main():
            save_array(entry, split.pixels, {"kind": "features", "data": recipe.get("data")}, reporter,
                       f"the {name} features")
        return split
    with reporter.progress(description, num_batches(len(want.split), cache_batch(images.device))) as advance:
        blocks = _feature_blocks(backbone, want.split, images, want.views, want.augment, advance)
        index = save_rows(entry, blocks, len(want.split), {"kind": "features", "data": recipe.get("data")}, reporter,
                          f"the {name} features")
    return Split(labels=want.split.labels, pixels=entry.open(index))


def _weights_digest(model: nn.Module, head: str) -> str:
    """A hash of the backbone's weights and buffers (the new head's are left out: they do not shape features)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not name.startswith(f"{head}."):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _feature_entry(weights: str, want: Wanted, recipe: dict) -> Entry:
    described = {**recipe, "weights": weights, "views": want.views, "augment": recipe["augment"] if want.augment
                 else "none", "images": content_key(want.split.pixels), "processes": distributed.world_size()}
    return Entry("features", hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32])
