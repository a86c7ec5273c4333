"""The frozen-backbone feature cache: the backbone runs once per image (and view), then only the head trains.

With the backbone frozen, its output for an image never changes, so computing
it every epoch is wasted work. Each training image is passed through once per
cached view (views differ only when training augments), the validation
images once; each epoch then picks one view per image at random. A cached
split is an ordinary :class:`~vqtool.data.Split` whose ``pixels`` hold
features (N × views × the head's input shape, float32) instead of images.
"""

from __future__ import annotations

import torch
from torch import nn

from vqtool.data import Split
from vqtool.data.pipeline import ImageInputs, batches, num_batches
from vqtool.engine import distributed
from vqtool.output import Output

BATCH = 64


class FeatureInputs:
    """A training run's input side for cached features: one random view per image, view 0 to evaluate."""

    def __init__(self, device: torch.device, seed: int = 0):
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)

    def train(self, features: torch.Tensor) -> torch.Tensor:
        view = torch.randint(features.shape[1], (len(features),), generator=self.generator)
        return features[torch.arange(len(features)), view].to(self.device, non_blocking=True)

    def eval(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, 0].to(self.device, non_blocking=True)


def cache_features(model: nn.Module, head: str, split: Split, images: ImageInputs, views: int, *,
                   augment: bool, out: Output, description: str) -> Split:
    """``split``'s images as the features the head receives: ``views`` passes, augmented when ``augment``.

    Under torchrun each rank computes the features of its share of the images,
    then all ranks exchange them, so every rank holds the whole cache.
    """
    if not distributed.is_distributed():
        return _features(model, head, split, images, views, augment, out, description)
    share = split.subset(torch.arange(distributed.rank(), len(split), distributed.world_size()))
    cached = _features(model, head, share, images, views, augment, out, description)
    return Split(labels=distributed.gather(cached.labels), pixels=distributed.gather(cached.pixels))


@torch.no_grad()
def _features(model, head, split, images, views, augment, out, description) -> Split:
    captured = []
    hook = model.get_submodule(head).register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    model.eval()
    to_input = images.train if augment else images.eval
    per_view = []
    try:
        with out.progress(description, views * num_batches(len(split), BATCH)) as advance:
            for _ in range(views):
                captured.clear()
                for stored, _ in batches(split, BATCH):
                    model(to_input(stored))
                    advance()
                per_view.append(torch.cat([f.float().cpu() for f in captured]))
    finally:
        hook.remove()
    return Split(labels=split.labels, pixels=torch.stack(per_view, dim=1))
