"""Running a model over a split."""

from __future__ import annotations

import torch

from vqtool.data import Split
from vqtool.data.pipeline import Normalizer, Preprocess, batches


@torch.no_grad()
def predict(model, split: Split, preprocess: Preprocess, device: torch.device,
            batch_size: int = 256, progress=None) -> torch.Tensor:
    """Logits (N×K, float32 on the CPU) for a prepared split, in order.

    ``model`` is an ``nn.Module`` or any callable from a float batch to logits
    (an exported model's runtime session, for example).
    """
    if isinstance(model, torch.nn.Module):
        model.eval()
    normalize = Normalizer(preprocess, device, channels_last=True)
    outputs = []
    for images, _ in batches(split, batch_size):
        outputs.append(model(normalize(images)).float().cpu())
        if progress:
            progress()
    return torch.cat(outputs) if outputs else torch.empty(0, 0)
