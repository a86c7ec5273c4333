"""Embeddings: a registry backbone's features (the input of its classifier), L2-normalised.

They come from the frozen-backbone feature store (:func:`vqtool.classification.training.features.features_of`), so the
backbone runs once per image and preprocessing; a second inspection reads them. Where mirrored images are fair
(``Dataset.flips``), an image's embedding is the mean of its own features and its mirror image's, so a flipped
copy has the same embedding as its original.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vqtool.classification.training.features import Wanted, features_of
from vqtool.compute.device import resolve_device
from vqtool.data import Dataset, Split
from vqtool.data.pipeline import ImageInputs, Preprocess
from vqtool.errors import VQError, first_line
from vqtool.reporter import Reporter

READ_ROWS = 4096  # feature rows read from the store at a time


@dataclass
class Backbone:
    model: nn.Module
    head: str
    preprocess: Preprocess
    source: str
    device: torch.device


def load_backbone(name: str, weights: str | None, imgsz: int | None, device: str) -> Backbone:
    """The registry model ``name`` with ``weights``; when named weights are not at hand, one line on --weights."""
    from vqtool.models.surgery import find_head
    from vqtool.models.weights import pretrained_classifier

    try:
        pretrained = pretrained_classifier(name, weights)
    except VQError as error:
        if weights or "--weights" in str(error):  # it already says how to pass them
            raise
        raise VQError(f"no pretrained weights for {name} at hand ({first_line(error)}); pass --weights FILE (a "
                      f"state dict, e.g. tf_efficientnet_lite0.in1k.safetensors for the default model) or --model "
                      f"and --weights of another backbone", usage=True) from error
    preprocess = pretrained.preprocess.at_size(imgsz) if imgsz else pretrained.preprocess
    model = pretrained.model.to(resolve_device(device))
    return Backbone(model, find_head(model), preprocess, pretrained.source, resolve_device(device))


class MirroredViews(ImageInputs):
    """An image's two views for the feature store: itself and its mirror image, in turn (``features_of`` passes each
    batch ``views`` times through ``train``; the embedding is their sum, whatever the order)."""

    def __init__(self, preprocess: Preprocess, device: torch.device):
        super().__init__(preprocess, device)
        self.calls = 0

    def train(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.eval(images.flip(-1) if self.calls % 2 == 0 else images)


def embed(backbone: Backbone, splits: dict[str, Split], dataset: Dataset, reporter: Reporter,
          store: bool = True) -> torch.Tensor:
    """N × D L2-normalised embeddings of the splits' images, the splits one after another (float32)."""
    mirrored = dataset.flips
    wanted = {name: Wanted(split, 2 if mirrored else 1, mirrored) for name, split in splits.items()}
    recipe = {"preprocess": backbone.preprocess.to_dict(), "augment": "mirror", "seed": 0, "data": dataset.name}
    inputs = (MirroredViews if mirrored else ImageInputs)(backbone.preprocess, backbone.device)
    features = features_of(backbone.model, backbone.head, wanted, inputs, recipe, reporter, store=store)
    pooled = torch.cat([_rows(features[name]) for name in splits])
    return torch.nn.functional.normalize(pooled.flatten(1), dim=1)


def _rows(split: Split) -> torch.Tensor:
    """A feature split's rows in memory (N × D float32: each image's views summed), read in blocks."""
    rows = len(split.pixels)
    out = torch.empty((rows, *split.pixels.shape[2:]), dtype=torch.float32)
    for start in range(0, rows, READ_ROWS):
        index = torch.arange(start, min(rows, start + READ_ROWS))
        out[index] = split.pixels[index].float().sum(dim=1)  # the views' sum: the mirror's features added
    return out
