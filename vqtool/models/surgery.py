"""Changes to a built model: input channels, finding and replacing the classifier head."""

from __future__ import annotations

import torch
from torch import nn


def _parent(model: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    *path, leaf = dotted.split(".")
    parent = model
    for part in path:
        parent = getattr(parent, part) if not part.isdigit() else parent[int(part)]
    return parent, leaf


def set_module(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, leaf = _parent(model, dotted)
    if leaf.isdigit():
        parent[int(leaf)] = module
    else:
        setattr(parent, leaf, module)


def adapt_input_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """Rebuild the first convolution for ``in_channels``, keeping any learned filters.

    Pretrained RGB filters become their mean for one channel, or are tiled and
    rescaled for more, so the layer's response to a grey image is unchanged.
    """
    name, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None or conv.in_channels == in_channels:
        return model
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
    )
    with torch.no_grad():
        weight = conv.weight.sum(dim=1, keepdim=True)
        new.weight.copy_(weight.repeat(1, in_channels, 1, 1) / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    set_module(model, name, new)
    return model


def find_head(model: nn.Module) -> str:
    """The dotted name of the classifier: timm's ``get_classifier`` or the last Linear."""
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        for name, module in model.named_modules():
            if module is head and isinstance(module, (nn.Linear, nn.Conv2d)):
                return name
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:  # SqueezeNet classifies with a 1x1 convolution
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1):
                last = name
    if last is None:
        raise ValueError("cannot find a classifier layer in this model")
    return last


MLP_HIDDEN = 512


def replace_head(model: nn.Module, num_classes: int, kind: str = "linear") -> str:
    """Put a new, randomly initialised classifier for ``num_classes`` where the old one was; its name."""
    name = find_head(model)
    old = model.get_submodule(name)
    if isinstance(old, nn.Conv2d):  # a 1x1-convolution classifier (SqueezeNet) keeps its form
        if kind != "linear":
            raise ValueError(f"a {kind} head needs a linear classifier; this model classifies with a convolution")
        set_module(model, name, nn.Conv2d(old.in_channels, num_classes, kernel_size=1))
        return name
    features = old.in_features
    if kind == "mlp":
        new = nn.Sequential(nn.Linear(features, MLP_HIDDEN), nn.ReLU(inplace=True), nn.Dropout(0.2),
                            nn.Linear(MLP_HIDDEN, num_classes))
    else:
        new = nn.Linear(features, num_classes)
    set_module(model, name, new)
    return name
