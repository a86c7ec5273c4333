"""Output sizes of convolutions and poolings: one layer, or a chain written as ``conv3x3s1p1,pool2``.

Every size is the same formula PyTorch uses (``nn.Conv2d``, and ``nn.MaxPool2d``
with ``ceil_mode=False``)::

    out = floor((W + 2P - D*(K-1) - 1) / S) + 1
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from vqtool.errors import VQError

GRAMMAR = "convKxK[sS][pP][dD], poolN or poolKsS (e.g. conv3x3s1p1,pool2)"
CONV = re.compile(r"conv(?P<kernel>\d+)x(?P=kernel)(?:s(?P<stride>\d+))?(?:p(?P<padding>\d+))?(?:d(?P<dilation>\d+))?")
POOL = re.compile(r"pool(?P<kernel>\d+)(?:s(?P<stride>\d+))?")


@dataclass(frozen=True)
class Layer:
    """A square sliding window: a convolution, or a pooling (no padding or dilation)."""

    kind: str  # "conv" or "pool"
    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1

    @property
    def spec(self) -> str:
        """The layer in the chain grammar, every value spelled out."""
        if self.kind == "pool":
            return f"pool{self.kernel}s{self.stride}"
        dilation = f"d{self.dilation}" if self.dilation != 1 else ""
        return f"conv{self.kernel}x{self.kernel}s{self.stride}p{self.padding}{dilation}"

    def formula(self, size: int) -> str:
        return (f"floor(({size} + 2*{self.padding} - {self.dilation}*({self.kernel}-1) - 1) / {self.stride}) + 1"
                f" = {output_size(size, self.kernel, self.stride, self.padding, self.dilation)}")


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """The formula itself; may be below 1 (``layer_output`` turns that into an error)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def layer_output(size: int, layer: Layer) -> int:
    """``layer``'s output side for an input side of ``size``; a VQError when nothing would be left."""
    result = output_size(size, layer.kernel, layer.stride, layer.padding, layer.dilation)
    if result < 1:
        reach = layer.dilation * (layer.kernel - 1) + 1
        raise VQError(f"{layer.spec}: a {size} px input (padded to {size + 2 * layer.padding}) is smaller than the "
                      f"kernel's reach of {reach} px, so the output would be {result} px", usage=True)
    return result


def parse_layer(text: str) -> Layer:
    text = text.strip().lower()
    if match := CONV.fullmatch(text):
        values = {k: int(v) for k, v in match.groupdict().items() if v is not None}
        return checked(Layer("conv", **values), text)
    if match := POOL.fullmatch(text):
        kernel = int(match["kernel"])
        return checked(Layer("pool", kernel, stride=int(match["stride"] or kernel)), text)
    raise VQError(f"cannot read layer {text!r}; write {GRAMMAR}", usage=True)


def checked(layer: Layer, text: str) -> Layer:
    if min(layer.kernel, layer.stride, layer.dilation) < 1:
        raise VQError(f"{text}: kernel, stride and dilation must be at least 1", usage=True)
    return layer


def parse_layers(text: str) -> list[Layer]:
    """``conv3x3s1p1,pool2,...`` as layers, in order."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise VQError(f"--layers is empty; write {GRAMMAR}", usage=True)
    return [parse_layer(part) for part in parts]


def chain_sizes(size: int, layers: list[Layer]) -> list[dict]:
    """One row per layer: its settings, input and output side."""
    if size < 1:
        raise VQError(f"input size must be at least 1 (got {size})", usage=True)
    rows = []
    for layer in layers:
        output = layer_output(size, layer)
        rows.append({"layer": layer.spec, **asdict(layer), "input": size, "output": output,
                     "formula": layer.formula(size)})
        size = output
    return rows
