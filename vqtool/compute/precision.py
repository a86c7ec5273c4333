"""Mixed precision: which autocast dtype a device trains and infers in, and the gradient scaler fp16 needs.

``--amp auto`` is bf16 on GPUs that support it, fp16 (with a gradient scaler,
whose loss scaling keeps small fp16 gradients from flushing to zero) on other
GPUs, and off on CPUs: bf16 autocast measured 2-3x slower than fp32 on CPUs
without native bf16 (NOTES.md), and fp16 autocast is a GPU feature.
"""

from __future__ import annotations

import contextlib

import torch

from vqtool.errors import VQError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(mode: str, device: torch.device) -> tuple[torch.dtype | None, str | None]:
    """(autocast dtype or None for fp32, a warning or None) for ``--amp mode`` on ``device``."""
    if mode == "off":
        return None, None
    if device.type == "cuda":
        if mode == "auto":
            return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16), None
        return DTYPES[mode], None
    if mode == "auto":
        return None, None
    if mode == "fp16":
        raise VQError(f"--amp fp16 needs a CUDA GPU (the device is {device.type}); use --amp off or bf16",
                      usage=True)
    return torch.bfloat16, (f"--amp bf16 on {device.type}: bf16 autocast is usually 2-3x slower than fp32 on "
                            f"CPUs without native bf16 support; --amp off (the default there) trains in fp32")


class Precision:
    """Autocast and loss scaling for one run: fp32 when ``dtype`` is None."""

    def __init__(self, dtype: torch.dtype | None, device: torch.device):
        self.dtype, self.device = dtype, device
        self.scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer) -> None:
        """Gradients in true units (before clipping them)."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)


def inference_autocast(device: torch.device):
    """Autocast for inference: on GPUs in their best half precision (eval, confusion, predict), else none."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
