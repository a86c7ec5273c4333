"""Choosing the device."""

from __future__ import annotations

import torch

from vqtool.errors import VQError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VQError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)", usage=True)
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise VQError("--device mps: Apple MPS is not available here (use --device cpu or auto)", usage=True)
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise VQError(f"--device {name}: {error}", usage=True) from error
