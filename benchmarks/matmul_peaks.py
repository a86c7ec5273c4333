"""The physical limit: this machine's measured matmul peaks (fp32, bf16, int8) and the FLOPs of our models.

    python benchmarks/matmul_peaks.py [--size 1024] [--seconds 3]

Prints the CPU's features, the GFLOP/s (GOP/s for int8) of a square matmul in
torch for each precision, and the FLOPs per 224 px image of ResNet-18 and
EfficientNet-Lite0 (torch's FlopCounterMode; one multiply-add = 2 FLOPs), so
that a format's img/s from `vqtool benchmark` converts to a share of the peak:
img/s x GFLOP per image / peak GFLOP/s.
"""

from __future__ import annotations

import argparse
import time

import torch


def peak(dtype: torch.dtype, size: int, seconds: float) -> float | None:
    """Operations per second of ``size``-square matmuls in ``dtype`` (None when torch has no such CPU kernel)."""
    if dtype == torch.int8:
        a = torch.randint(-128, 127, (size, size), dtype=torch.int8)
        b = torch.randint(-128, 127, (size, size), dtype=torch.int8)
        multiply = getattr(torch, "_int_mm", None)
    else:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        multiply = torch.mm
    try:
        multiply(a, b)
    except (RuntimeError, TypeError):
        return None
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        multiply(a, b)
        calls += 1
    return 2 * size ** 3 * calls / (time.perf_counter() - started)


def model_flops(name: str) -> float:
    """FLOPs of one 224 px image through ``name`` (random weights: the count does not depend on them)."""
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    model = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 224, 224))
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    from vqtool.compute.cpu import cpu_features

    print(f"CPU features: {cpu_features().describe()}")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("int8", torch.int8)):
        rate = peak(dtype, args.size, args.seconds)
        print(f"matmul {args.size}x{args.size} {name}: " + ("no CPU kernel in this torch" if rate is None
                                                            else f"{rate / 1e9:,.1f} GFLOP/s"), flush=True)
    for name in ("resnet18", "tf_efficientnet_lite0"):
        print(f"{name} at 224 px: {model_flops(name) / 1e9:.3f} GFLOP per image")


if __name__ == "__main__":
    main()
