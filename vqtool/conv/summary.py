"""Layer by layer: output shapes, parameters and multiply-accumulates (MACs) of a model for one input.

Shapes come from forward hooks on a batch of one zero image, so they are what
the model really produces. MACs count convolutions (output elements ×
in_channels/groups × kernel area) and linear layers (output elements ×
in_features); normalisation, activations and pooling are left out, as is usual.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vqtool.conv.inspection import InspectedModel, conv_layers, first_tensor, run_forward
from vqtool.errors import VQError
from vqtool.models.hooks import watching

DENSE_UNITS = 1000  # the fully connected layer the first conv is compared with
MAC_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def parse_input(text: str, channels: int) -> tuple[int, int, int]:
    """``3x224x224``, ``224x160`` (H×W) or ``224`` (square) as C, H, W; ``channels`` when not given."""
    try:
        sizes = [int(part) for part in text.lower().split("x")]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2, 3) or min(sizes, default=0) < 1:
        raise VQError(f"--input {text}: write CxHxW (3x224x224), HxW or one side (224)", usage=True)
    if len(sizes) == 1:
        sizes = sizes * 2
    return tuple(sizes) if len(sizes) == 3 else (channels, *sizes)


def own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def layer_macs(module: nn.Module, output: torch.Tensor | None) -> int:
    """Multiply-accumulates of one call on a batch of one."""
    if output is None:
        return 0
    if isinstance(module, MAC_CONVS):
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def reported_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Leaf modules, and containers that hold parameters themselves (timm's BatchNormAct2d), so rows add up."""
    return {name: module for name, module in model.named_modules()
            if name and (not any(module.children()) or own_params(module))}


@torch.no_grad()
def layer_rows(model: nn.Module, input_shape: tuple[int, int, int]) -> list[dict]:
    """One row per module called, in the order they run; a module called twice adds its MACs twice."""
    rows = {}

    def record(name, module, inputs, output):
        tensor = first_tensor(output)
        row = rows.setdefault(name, {"name": name, "type": type(module).__name__,
                                     "output_shape": None if tensor is None else list(tensor.shape[1:]),
                                     "params": own_params(module), "macs": 0})
        row["macs"] += layer_macs(module, tensor)

    with watching(reported_modules(model), record):
        run_forward(model, torch.zeros(1, *input_shape))
    return list(rows.values())


def conv_vs_dense(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[dict | None, dict | None]:
    """The first conv layer's parameters, and those of a dense layer of DENSE_UNITS over the same input."""
    found = next(iter(conv_layers(model).items()), None)
    if found is None:
        return None, None
    name, conv = found
    params = sum(p.numel() for p in conv.parameters())
    inputs = math.prod(input_shape)
    conv_info = {"name": name, "type": type(conv).__name__, "in_channels": conv.in_channels,
                 "out_channels": conv.out_channels, "kernel_size": list(conv.kernel_size), "params": params}
    dense = {"inputs": inputs, "units": DENSE_UNITS, "params": inputs * DENSE_UNITS,
             "times_first_conv": round(inputs * DENSE_UNITS / params, 1)}
    return conv_info, dense


def summarize(inspected: InspectedModel, input_shape: tuple[int, int, int], name: str) -> dict:
    """The summary document ``vqtool conv summary --json`` prints."""
    model = inspected.model.eval()
    layers = layer_rows(model, input_shape)
    conv_info, dense = conv_vs_dense(model, input_shape)
    return {
        "model": name,
        "source": inspected.source,
        "input": list(input_shape),
        "layers": layers,
        "total_params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_macs": sum(row["macs"] for row in layers),
        "first_conv": conv_info,
        "dense_equivalent": dense,
    }


def shape_string(shape: list[int] | None) -> str:
    return "x".join(map(str, shape)) if shape else "-"


def metric(count: int) -> str:
    """1814073344 -> '1.81 G', as MACs are usually quoted."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if count >= factor:
            return f"{count / factor:.2f} {prefix}"
    return str(count)


def totals_lines(document: dict) -> list[str]:
    """The lines under the layer table: totals, and the first conv against a dense layer."""
    lines = [f"total parameters      {document['total_params']:,}",
             f"trainable parameters  {document['trainable_params']:,}",
             f"multiply-accumulates  {document['total_macs']:,} ({metric(document['total_macs'])})"]
    conv, dense = document["first_conv"], document["dense_equivalent"]
    if conv is not None:
        kernel = "x".join(map(str, conv["kernel_size"]))
        lines.append(f"first conv            {conv['name']} ({conv['in_channels']}->{conv['out_channels']}, "
                     f"{kernel}): {conv['params']:,} parameters")
        lines.append(f"dense equivalent      {dense['units']:,} units over {shape_string(document['input'])} = "
                     f"{dense['inputs']:,} inputs: {dense['params']:,} weights "
                     f"({dense['times_first_conv']:,g}x the first conv)")
    return lines
