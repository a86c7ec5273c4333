"""Per-image augmentation policies on a device batch: vqtool's grouped implementation against the alternatives.

Times one batch (median of --repeats) for: vqtool's batched Augmenter (basic,
strong), vqtool's per-image policies (data/policies.py: trivial, randaugment,
autoaugment), torchvision v2's TrivialAugmentWide called once per image (what
per-image operations cost through torchvision), and kornia's TrivialAugment on
the whole batch (one operation per batch; only magnitudes differ per image) when
kornia is installed. Ratios are against vqtool's basic Augmenter.

Then the share of a training step each augmentation takes: a training step of
``--model`` (forward, backward, AdamW step, channels_last as the loop runs it)
on a 64x1x28x28 batch, and of resnet18 on 32x3x224x224, with and without the
augmenter, alternated, median of --repeats; the share is the augmentation's
time over the augmented step's (goal: under 20 %).

    python benchmarks/augment_speed.py [--device cpu|cuda] [--repeats 5] [--model cnn-bn]
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


def step_share(model_name: str, shape: tuple, device: str, repeats: int) -> None:
    """Augmentation time as a share of one augmented training step, each policy against the same step."""
    from vqtool.registry import create_model

    model = create_model(model_name, 10, shape[1]).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(device)
    y = torch.randint(10, (shape[0],), generator=torch.Generator().manual_seed(2)).to(device)

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        batch = batch.contiguous(memory_format=torch.channels_last)  # as the loop's Normalizer hands it over
        torch.nn.functional.cross_entropy(model(batch), y).backward()
        optimizer.step()

    print(f"share of a {model_name} training step, batch {'x'.join(map(str, shape))} on {device}")
    generator = torch.Generator().manual_seed(0)
    augmenters = [("basic", Augmenter("basic", True, generator))] + [
        (policy, PolicyAugmenter(policy, shape[-1], True, generator)) for policy in ("trivial", "randaugment",
                                                                                      "autoaugment")]
    for name, augment in augmenters:
        plain, augmented = [], []
        for _ in range(repeats):  # alternated, so that a drift of the machine's speed falls on both alike
            plain.append(timed(step, x, 1))
            augmented.append(timed(lambda batch: step(augment(batch)), x, 1))
        share = 1 - statistics.median(plain) / statistics.median(augmented)
        print(f"  {name:<12} step {statistics.median(plain) * 1000:7.1f} ms, with augmentation "
              f"{statistics.median(augmented) * 1000:7.1f} ms: augmentation {share:.0%} of the step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="cnn-bn", help="the small model of the step-share figures")
    parser.add_argument("--skip-alone", action="store_true", help="only the step-share figures")
    args = parser.parse_args()
    for model_name, shape in ((args.model, (64, 1, 28, 28)), ("resnet18", (32, 3, 224, 224))):
        step_share(model_name, shape, args.device, args.repeats)
    if args.skip_alone:
        return
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
