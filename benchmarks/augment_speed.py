"""Per-image augmentation policies on a device batch: vqtool's grouped implementation against the alternatives.

Times one batch (median of --repeats) for: vqtool's batched Augmenter (basic,
strong), vqtool's per-image policies (data/policies.py: trivial, randaugment,
autoaugment), torchvision v2's TrivialAugmentWide called once per image (what
per-image operations cost through torchvision), and kornia's TrivialAugment on
the whole batch (one operation per batch; only magnitudes differ per image) when
kornia is installed. Ratios are against vqtool's basic Augmenter.

    python benchmarks/augment_speed.py [--device cpu|cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vqtool.data.pipeline import Augmenter
from vqtool.data.policies import PolicyAugmenter

SHAPES = [(128, 1, 28, 28), (32, 3, 224, 224)]


def timed(function, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of ``function(x)`` (after one warm-up call)."""
    function(x)
    seconds = []
    for _ in range(repeats):
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        function(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def candidates(size: int):
    generator = torch.Generator().manual_seed(0)
    yield "vqtool Augmenter basic (batched)", Augmenter("basic", True, generator)
    yield "vqtool Augmenter strong (batched)", Augmenter("strong", True, generator)
    for policy in ("trivial", "randaugment", "autoaugment"):
        yield f"vqtool {policy} (per image, grouped)", PolicyAugmenter(policy, size, True, generator)
    import torchvision.transforms.v2 as T

    wide = T.TrivialAugmentWide()
    yield "torchvision v2 TrivialAugmentWide, image by image (uint8)", \
        lambda x: torch.stack([wide((image * 255).to(torch.uint8)) for image in x]).float() / 255
    try:
        from kornia.augmentation.auto import TrivialAugment
    except ImportError:
        return
    kornia_ta = TrivialAugment()
    yield "kornia TrivialAugment (one op per batch)", \
        lambda x: kornia_ta(x if x.shape[1] == 3 else x.expand(-1, 3, -1, -1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for shape in SHAPES:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(args.device)
        print(f"batch {'x'.join(map(str, shape))} on {args.device}")
        baseline = None
        for name, augment in candidates(shape[-1]):
            seconds = timed(augment, x, args.repeats)
            baseline = baseline or seconds
            print(f"  {name:<60} {seconds * 1000:8.1f} ms  {shape[0] / seconds:9.0f} img/s  x{seconds / baseline:.2f}")


if __name__ == "__main__":
    main()
