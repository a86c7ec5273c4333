"""Choosing the device."""

from __future__ import annotations

import contextlib
import re

import torch

from vqtool.errors import VQError, first_line


def resolve_device(name: str = "auto") -> torch.device:
    """--device as a torch device; under torchrun, a GPU rank's own GPU."""
    from vqtool.compute.distributed import local_device

    return local_device(_named_device(name))


def _named_device(name: str) -> torch.device:
    if re.fullmatch(r"\d+(,\d+)+", name):
        raise VQError(f"--device {name}: several GPUs train a classifier through torchrun "
                      f"(torchrun --nproc_per_node=N -m vqtool ...); see the README", usage=True)
    if re.fullmatch(r"\d+", name):
        name = f"cuda:{name}"
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
        raise VQError(f"--device {name}: {first_line(error)}", usage=True) from error


def use_threads(count: int | None) -> None:
    """``--threads N``: torch's CPU threads, which the exported models' runtimes (ONNX Runtime, OpenVINO) also use."""
    if count is not None:
        torch.set_num_threads(count)


@contextlib.contextmanager
def one_cpu_thread(wanted: bool = True):
    """Torch on one CPU thread for steps too small to share between threads (a head over stored features): on a busy
    2-core machine (load average 12) two threads made a 1280-512-10 head's step (batch 32) 6-12x slower (430-530 ms
    against 36-73 ms), each parallel region waiting for a thread the kernel had given to another job."""
    threads = torch.get_num_threads()
    if wanted:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# Inference batches: on a GPU large ones; on the CPU about 64 images of 224 px (more of smaller ones). Measured on
# 2 cores, EfficientNet-Lite0, forward passes interleaved: 118 ms per image in batches of 64, 147 in 32, 116 in 128
# and about 250 in 256; `eval` of 100 photos peaked at 2.13 GB with 256 and 1.64 GB with 64.
GPU_INFERENCE_BATCH = 256
CPU_INFERENCE_PIXELS = 64 * 224 * 224


def inference_batch(device: torch.device, image_size: int, asked: int | None = None) -> int:
    """Images per inference batch: ``asked`` when given, else what suits the device and the image size."""
    if asked:
        return asked
    if device.type != "cpu":
        return GPU_INFERENCE_BATCH
    return max(16, min(GPU_INFERENCE_BATCH, CPU_INFERENCE_PIXELS // max(1, image_size) ** 2))
