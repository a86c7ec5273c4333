"""Running a classifier over a prepared split: its logits, in order."""

from __future__ import annotations

import contextlib

import torch

from vqtool.compute.device import inference_batch
from vqtool.compute.precision import inference_autocast
from vqtool.data import Split
from vqtool.data.pipeline import Normalizer, Preprocess, batches, collect


def logits_of(model, split: Split, preprocess: Preprocess, device: torch.device,
            batch_size: int | None = None, progress=None, amp: str = "auto") -> torch.Tensor:
    """Logits (N×K, float32 on the CPU) for a prepared split of images, in order.

    ``model`` is an ``nn.Module`` or any callable from a float batch to logits
    (an exported model's runtime session, for example). A module runs under
    ``inference_autocast(device, amp)``: half precision on GPUs, fp32 on CPUs
    unless ``amp`` is bf16. ``batch_size`` defaults to what suits the device
    (:func:`~vqtool.compute.device.inference_batch`).
    """
    to_input = Normalizer(preprocess, device, channels_last=isinstance(model, torch.nn.Module))
    batch_size = inference_batch(device, preprocess.size, batch_size)
    with inference_autocast(device, amp) if isinstance(model, torch.nn.Module) else contextlib.nullcontext():
        return logits_with(model, split, to_input, batch_size, progress)


@torch.no_grad()
def logits_with(model, split: Split, to_input, batch_size: int = 256, progress=None) -> torch.Tensor:
    """Logits for a split whose stored batches ``to_input`` turns into model input (images or cached features)."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    return collect(_logits(model, split, to_input, batch_size, progress), len(split))


def _logits(model, split: Split, to_input, batch_size: int, progress):
    for stored, _ in batches(split, batch_size):
        yield model(to_input(stored)).float().cpu()
        if progress:
            progress()
