"""Which parts of a pretrained network train: ``--freeze backbone|none|N|until:LAYER`` and staged unfreezing.

The backbone is cut into *stages* in forward order: its top-level blocks
(``layer1``..``layer4`` of a ResNet), with a trunk that holds most of the
parameters (timm's ``blocks``, torchvision's ``features``) split into its own
children, and runs of single layers (a stem's conv and norm) kept together.
``--freeze N`` and ``--unfreeze N`` count stages from the end.
"""

from __future__ import annotations

from torch import nn

from vqtool.errors import VQError, suggest
from vqtool.models.options import FreezeSpec

TRUNK_SHARE = 0.5  # a top-level container holding more than this share of the backbone is split
TRUNK_MIN_CHILDREN = 4


def stages(model: nn.Module, head: str) -> list[list[str]]:
    """The backbone's stages in forward order, each a list of module names."""
    head_parts = head.split(".")
    units: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if name == head_parts[0]:
            if len(head_parts) > 1:  # the head sits inside a container (VGG's classifier): keep the rest
                units += [(f"{name}.{n}", m) for n, m in child.named_children() if n != head_parts[1]]
            continue
        units.append((name, child))
    total = sum(_count(m) for _, m in units)
    expanded = []
    for name, module in units:
        children = list(module.named_children())
        if (isinstance(module, (nn.Sequential, nn.ModuleList)) and len(children) >= TRUNK_MIN_CHILDREN
                and _count(module) > TRUNK_SHARE * total):
            expanded += [(f"{name}.{n}", m) for n, m in children]
        else:
            expanded.append((name, module))
    grouped: list[list[str]] = []
    previous_was_layer = False
    for name, module in expanded:
        if _count(module) == 0:
            continue
        is_layer = not any(_count(child) for child in module.children())  # norm+activation is one layer too
        if is_layer and previous_was_layer:
            grouped[-1].append(name)
        else:
            grouped.append([name])
        previous_was_layer = is_layer
    return grouped


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def apply_freeze(model: nn.Module, head: str, spec: FreezeSpec) -> None:
    """Set ``requires_grad`` per ``spec``; the head always trains."""
    model.requires_grad_(spec.mode == "none")
    if spec.mode == "stages":
        unfreeze_last(model, head, spec.stages)
    elif spec.mode == "until":
        _freeze_until(model, spec.until)
    model.get_submodule(head).requires_grad_(True)


def unfreeze_last(model: nn.Module, head: str, count: int, *, norms: bool = True) -> list[str]:
    """Make the last ``count`` backbone stages trainable (without their batch norms unless ``norms``: those then
    keep their statistics too, see :func:`set_train_mode`); their module names."""
    names = [name for stage in stages(model, head)[::-1][:count] for name in stage]
    for name in names:
        stage = model.get_submodule(name)
        stage.requires_grad_(True)
        if not norms:
            for module in stage.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.requires_grad_(False)
    return names


def _freeze_until(model: nn.Module, layer: str) -> None:
    """Everything up to and including ``layer`` frozen, everything after it trainable."""
    modules = dict(model.named_modules())
    if layer not in modules:
        raise VQError(f"--freeze until:{layer}: no such layer{suggest(layer, modules)}; "
                      f"see vqtool conv summary for the names", usage=True)
    names = [name for name, _ in model.named_parameters()]
    inside = [i for i, name in enumerate(names) if name.startswith(f"{layer}.")]
    if not inside:
        raise VQError(f"--freeze until:{layer}: that layer has no parameters", usage=True)
    parameters = list(model.parameters())
    for index, parameter in enumerate(parameters):
        parameter.requires_grad_(index > inside[-1])


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters()) - trainable


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except that normalisation layers whose parameters are frozen keep their statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parameters = list(module.parameters())
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()
