"""TrivialAugment, RandAugment and AutoAugment applied per image to a whole float batch on the device.

torchvision's transforms apply one operation (with one magnitude) to every
image of a batched tensor, and kornia's policies pick one operation per batch
too (only the magnitudes differ per image): neither gives each image its own
operation without a per-image loop. Here every image samples its own
operation and magnitude from torchvision's augmentation spaces (the same ops,
magnitude bins and AutoAugment ImageNet policy); the images are then grouped
by operation, each group transformed at once with per-image magnitudes, and
all geometric ones of a round in one ``grid_sample``. Random numbers come from
the run's generator, so augmentation is reproducible and resumable.

Operations follow torchvision's definitions on [0, 1] images (shears and
rotations about the centre, zero fill); translations scale with the image
(torchvision's TrivialAugment moves up to 32 pixels of a 224 px image).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
TRIVIAL_BINS = 31
RANDAUGMENT_OPS = 2
DEFAULT_MAGNITUDE = 9  # torchvision's RandAugment default bin of 31
AUTOAUGMENT_BINS = 10


def _spaces(policy: str, size: int) -> dict[str, tuple[torch.Tensor, bool]]:
    """op name -> (magnitude of each bin, signed?) as torchvision defines them for ``policy``."""
    import torchvision.transforms as T

    if policy == "trivial":
        space = T.TrivialAugmentWide()._augmentation_space(TRIVIAL_BINS)
        space = {**space, **{k: (space[k][0] * size / 224, True) for k in ("TranslateX", "TranslateY")}}
    elif policy == "randaugment":
        space = T.RandAugment()._augmentation_space(TRIVIAL_BINS, (size, size))
    else:
        space = T.AutoAugment()._augmentation_space(AUTOAUGMENT_BINS, (size, size))
    return {name: (values.float().reshape(-1), signed) for name, (values, signed) in space.items()}


class PolicyAugmenter:
    """``policy`` (trivial, randaugment or autoaugment) on float batches in [0, 1], each image its own ops."""

    def __init__(self, policy: str, size: int, flips: bool, generator: torch.Generator, magnitude: int | None = None):
        import torchvision.transforms as T

        self.policy, self.flips, self.generator = policy, flips, generator
        self.space = _spaces(policy, size)
        self.names = list(self.space)
        self.table, self.signed = _magnitude_table(self.space)
        self.magnitude = magnitude  # None: the policy's own (TrivialAugment: every bin; RandAugment: 9)
        if policy == "autoaugment":
            self.subpolicies = T.AutoAugment()._get_policies(T.AutoAugmentPolicy.IMAGENET)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.flips:
            flip = (torch.rand(len(x), generator=self.generator) < 0.5).to(x.device)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        for ops, magnitudes in self._rounds(len(x)):
            x = apply_ops(x, ops, magnitudes, self.names)
        return x

    def _rounds(self, n: int):
        """(op index per image, magnitude per image) for each round of operations (-1: no operation)."""
        if self.policy == "autoaugment":
            yield from self._autoaugment_rounds(n)
            return
        rounds = 1 if self.policy == "trivial" else RANDAUGMENT_OPS
        for _ in range(rounds):
            ops = torch.randint(len(self.names), (n,), generator=self.generator)
            if self.policy == "trivial":  # TrivialAugment: a magnitude bin per image, up to --augment-magnitude
                top = TRIVIAL_BINS - 1 if self.magnitude is None else min(self.magnitude, TRIVIAL_BINS - 1)
                bins = torch.randint(top + 1, (n,), generator=self.generator)
            else:
                bins = torch.full((n,), min(DEFAULT_MAGNITUDE if self.magnitude is None else self.magnitude,
                                            TRIVIAL_BINS - 1))
            yield ops, self._magnitudes(ops, bins)

    def _autoaugment_rounds(self, n: int):
        chosen = torch.randint(len(self.subpolicies), (n,), generator=self.generator)
        for position in range(2):
            steps = [subpolicy[position] for subpolicy in self.subpolicies]
            ops = torch.tensor([self.names.index(name) for name, _, _ in steps])[chosen]
            probability = torch.tensor([probability for _, probability, _ in steps])[chosen]
            bins = torch.tensor([magnitude_bin or 0 for _, _, magnitude_bin in steps])[chosen]
            ops = torch.where(torch.rand(n, generator=self.generator) < probability, ops, -1)
            yield ops, self._magnitudes(ops, bins)

    def _magnitudes(self, ops: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
        """The magnitude of each image's operation at its bin (signed ops get a random sign; 0 for no operation)."""
        signs = torch.where(torch.rand(len(ops), generator=self.generator) < 0.5, -1.0, 1.0)
        op = ops.clamp_min(0)
        magnitudes = self.table[op, bins.clamp(0, self.table.shape[1] - 1)]
        return torch.where(ops < 0, 0.0, magnitudes * torch.where(self.signed[op], signs, 1.0))


def _magnitude_table(space: dict[str, tuple[torch.Tensor, bool]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(op x bin magnitudes, signed? per op): an op with fewer bins repeats its last value, one of a single
    value (Identity, AutoContrast, ...) is 0."""
    width = max(values.numel() for values, _ in space.values())
    rows = [F.pad(values, (0, width - values.numel()), value=values[-1].item()) if values.numel() > 1
            else torch.zeros(width) for values, _ in space.values()]
    return torch.stack(rows), torch.tensor([signed for _, signed in space.values()])


def apply_ops(x: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Image i gets operation ``names[ops[i]]`` (none for -1) with ``magnitudes[i]``.

    The batch is sorted by operation once: the geometric ones first, transformed in one ``grid_sample``, then
    each colour operation's run of images; the results are put back in the batch's order in one scatter.
    """
    # the order groups are taken in: no operation, the geometric ones, then each colour operation
    rank = torch.tensor([1 + (GEOMETRIC.index(name) if name in GEOMETRIC else len(GEOMETRIC) + i)
                         for i, name in enumerate(names)])
    keys = torch.where(ops < 0, 0, rank[ops.clamp_min(0)])
    order = torch.argsort(keys, stable=True)
    counts = torch.bincount(keys, minlength=int(rank.max()) + 1).tolist()
    sorted_x, sorted_m = x[order.to(x.device)], magnitudes[order].to(x.device)
    pieces, start = [sorted_x[:counts[0]]], counts[0]
    geometric = sum(counts[1:1 + len(GEOMETRIC)])
    if geometric:
        kinds = (keys[order][start:start + geometric] - 1).to(x.device)
        pieces.append(_affine(sorted_x[start:start + geometric], kinds, sorted_m[start:start + geometric]))
        start += geometric
    for i, name in enumerate(names):
        count = counts[rank[i]] if name not in GEOMETRIC else 0
        if count:
            group = sorted_x[start:start + count]
            pieces.append(COLOUR_OPS[name](group, sorted_m[start:start + count].view(-1, 1, 1, 1))
                          if name in COLOUR_OPS else group)
            start += count
    out = torch.empty_like(x)
    out[order.to(x.device)] = torch.cat(pieces).to(out.dtype)
    return out


def _affine(x: torch.Tensor, kinds: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Image i gets ``GEOMETRIC[kinds[i]]`` with magnitude m[i]: shears (by atan(m), as torchvision),
    translations (m pixels) and rotations (m degrees), zero fill."""
    side = x.shape[-1]
    theta = torch.eye(2, 3, device=x.device).repeat(len(x), 1, 1)
    for kind, (row, column, value) in enumerate(((0, 1, m), (1, 0, m), (0, 2, -2 * m / side),
                                                 (1, 2, -2 * m / side))):
        theta[:, row, column] = torch.where(kinds == kind, value, theta[:, row, column])
    angle = torch.where(kinds == GEOMETRIC.index("Rotate"), m, 0.0) * math.pi / 180
    rotation = torch.stack([torch.stack([angle.cos(), -angle.sin()], 1), torch.stack([angle.sin(), angle.cos()], 1)],
                           1)
    rotate = (kinds == GEOMETRIC.index("Rotate")).view(-1, 1, 1)
    theta[:, :, :2] = torch.where(rotate, rotation, theta[:, :, :2])
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x
    return (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's blend: factor * x + (1 - factor) * other, clamped to [0, 1]."""
    return (factor * x + (1 - factor) * other).clamp(0, 1)


def _sharpness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    # torchvision's smoothing kernel (ones, 5 in the centre, over 13) as a 3x3 window sum plus 4 x the centre:
    # pooling is many times faster than a grouped convolution on small CPU batches
    blurred = x.clone()
    blurred[..., 1:-1, 1:-1] = (F.avg_pool2d(x, 3, stride=1) * 9 + 4 * x[..., 1:-1, 1:-1]) / 13  # border stays
    return _blend(x, blurred, 1 + m)


def _posterize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    step = 2 ** (8 - m.round())
    return torch.floor((x * 255).round() / step) * step / 255


def _autocontrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    spread = high - low
    return torch.where(spread > 0, (x - low) / spread.clamp_min(1e-12), x)


def _equalize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """torchvision's histogram equalisation, for every image and channel at once."""
    n, c, h, w = x.shape
    values = (x * 255).round().long().clamp(0, 255).reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, device=x.device).scatter_add_(1, values, torch.ones(values.shape, device=x.device))
    last = torch.where(hist > 0, torch.arange(256, device=x.device), -1).amax(1, keepdim=True)
    step = torch.div(hist.sum(1, keepdim=True) - hist.gather(1, last), 255, rounding_mode="floor")
    lut = torch.div(hist.cumsum(1) + torch.div(step, 2, rounding_mode="floor"), step.clamp_min(1),
                    rounding_mode="floor")
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    equalized = (lut.gather(1, values) / 255).view(n, c, h, w)
    return torch.where(step.view(n, c, 1, 1) > 0, equalized, x)  # a flat channel stays as it is


COLOUR_OPS = {
    "Brightness": lambda x, m: _blend(x, torch.zeros_like(x), 1 + m),
    "Color": lambda x, m: _blend(x, _grey(x), 1 + m),
    "Contrast": lambda x, m: _blend(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True), 1 + m),
    "Sharpness": _sharpness,
    "Posterize": _posterize,
    "Solarize": lambda x, m: torch.where(x >= m / 255, 1 - x, x),
    "AutoContrast": _autocontrast,
    "Equalize": _equalize,
    "Invert": lambda x, m: 1 - x,
}
