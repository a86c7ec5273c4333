"""Mixed precision: which autocast dtype a device trains and infers in, and the gradient scaler fp16 needs.

``--amp auto`` is bf16 on GPUs that support it, fp16 (with a gradient scaler,
whose loss scaling keeps small fp16 gradients from flushing to zero) on other
GPUs; on CPUs it is bf16 only where the CPU computes bf16 natively (AMX or
AVX-512 BF16: about 2.8x fp32 for ResNet-18) and fp32 elsewhere, where bf16 is
emulated and 2-3x slower (NOTES.md). ``compute.cpu`` says which CPU this is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from vqtool.errors import VQError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class AmpChoice:
    """What ``--amp`` resolved to on a device, and why (logged and kept in the summary)."""

    dtype: torch.dtype | None  # None: fp32
    reason: str
    warning: str | None = None

    @property
    def name(self) -> str:
        return NAMES[self.dtype]

    def line(self) -> str:
        return f"precision: {self.name} ({self.reason})"


def amp_choice(mode: str, device: torch.device, features=None) -> AmpChoice:
    """``--amp mode`` on ``device``; ``features`` (a ``compute.cpu.CpuFeatures``) defaults to this CPU's."""
    if mode == "off":
        return AmpChoice(None, "--amp off")
    if device.type == "cuda":
        if mode == "auto":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return AmpChoice(dtype, f"--amp auto on a GPU {'with' if dtype == torch.bfloat16 else 'without'} bf16")
        return AmpChoice(DTYPES[mode], f"--amp {mode}")
    if mode == "fp16":
        raise VQError(f"--amp fp16 needs a CUDA GPU (the device is {device.type}); use --amp off or bf16",
                      usage=True)
    if device.type != "cpu":
        return (AmpChoice(None, f"--amp auto: fp32 on {device.type}") if mode == "auto"
                else AmpChoice(torch.bfloat16, f"--amp bf16 on {device.type}"))
    if features is None:
        from vqtool.compute.cpu import cpu_features

        features = cpu_features()
    native = " and ".join(features.bf16_flags)
    if mode == "auto":
        if features.native_bf16:
            return AmpChoice(torch.bfloat16, f"--amp auto: this CPU computes bf16 natively ({native})")
        return AmpChoice(None, "--amp auto: this CPU has no native bf16 (no AMX or AVX-512 BF16), where bf16 "
                               "autocast is 2-3x slower than fp32")
    if features.native_bf16:
        return AmpChoice(torch.bfloat16, f"--amp bf16; this CPU computes bf16 natively ({native})")
    return AmpChoice(torch.bfloat16, "--amp bf16",
                     warning="--amp bf16 on a CPU without native bf16 (no AMX or AVX-512 BF16): bf16 autocast is "
                             "usually 2-3x slower than fp32 there; --amp auto (the default) trains in fp32")


class Precision:
    """Autocast and loss scaling for one run: fp32 when ``dtype`` is None."""

    def __init__(self, dtype: torch.dtype | None, device: torch.device):
        self.dtype, self.device = dtype, device
        self.scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    @property
    def name(self) -> str:
        return NAMES[self.dtype]

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


def inference_autocast(device: torch.device, mode: str = "auto"):
    """Autocast for eval, confusion and predict: ``auto`` is the best half precision on GPUs and fp32 elsewhere
    (results must not depend silently on the CPU); ``bf16`` autocasts on any device; ``off`` is fp32."""
    if mode == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if device.type != "cuda" or mode == "off":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
