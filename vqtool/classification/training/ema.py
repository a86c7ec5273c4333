"""``--ema DECAY``: an exponential moving average of the weights, through timm's ``ModelEmaV3``.

After every optimizer step the average moves towards the trained weights by
``1 - decay(step)``, where the decay warms up as timm's does
(``1 - (1 + step) ** -2/3``, capped at DECAY) so that early, poor weights fade
quickly. Batch-norm statistics are not averaged but copied: they describe the
current weights' activations. Validation, the choice of the best epoch and the
saved checkpoint use the averaged weights.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    """The EMA of a model's weights and the number of updates so far (the decay warm-up's step)."""

    def __init__(self, model: nn.Module, decay: float):
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(model, decay=decay, use_warmup=True, exclude_buffers=True)
        self.updates = 0

    @property
    def module(self) -> nn.Module:
        return self.ema.module

    def update(self, model: nn.Module) -> None:
        self.updates += 1
        self.ema.update(model, step=self.updates)

    def decay_at(self, step: int) -> float:
        return self.ema.get_decay(step)

    def state_dict(self) -> dict:
        return {"module": {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()},
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]


@contextmanager
def weights_of(average: WeightAverage | None, model: nn.Module):
    """``model`` holding the averaged weights for the duration (to save it whole), its own afterwards."""
    if average is None:
        yield model
        return
    own = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.load_state_dict(average.module.state_dict())
    try:
        yield model
    finally:
        model.load_state_dict(own)


def checkpoint_meta(decay: float) -> dict:
    """What model.json says about averaged weights: the checkpoint of an --ema run holds the average."""
    return {"weights_average": {"method": "ema", "decay": decay}} if decay else {}
