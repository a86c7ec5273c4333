"""A model to look inside: loading it (checkpoint, registry name or pretrained weights), its activations and filters.

Activations are caught with forward hooks on one preprocessed image (a batch of
one, no gradients), so any architecture works without knowing its code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vqtool.conv.photos import read_photo
from vqtool.conv.visualize import save_feature_grid, save_filter_grid
from vqtool.data.images import fit_square, to_tensor
from vqtool.data.pipeline import Normalizer, Preprocess
from vqtool.errors import VQError, first_line, suggest
from vqtool.models.hooks import watching

RANDOM_WEIGHTS = ("none", "random")  # --weights none|random: the architecture's random initialisation
LIBRARY_SOURCES = ("torchvision", "timm")  # ImageNet architectures: 1000 classes unless told otherwise
BUILTIN_CLASSES = 10
LIBRARY_CLASSES = 1000
MAP_MODULES = (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
               nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)


@dataclass
class InspectedModel:
    """A model in eval mode, how its input is prepared, and what it is (for titles and JSON)."""

    model: nn.Module
    preprocess: Preprocess
    source: str


def load_inspected(spec: str, weights: str | None = None, num_classes: int | None = None, *,
                   allow_partial: bool = False) -> InspectedModel:
    """A vqtool checkpoint (run folder, model.safetensors or model.json) or a registry model name.

    A name gets ``weights`` through ``pretrained_classifier`` (the same specs as
    ``finetune --weights``), else (``None``, ``none``, ``random``) random weights for ``num_classes`` (default:
    1000 for torchvision and timm architectures, 10 for the others). ``allow_partial``
    accepts a weights file that fills less than half of the backbone.
    """
    if Path(spec).exists():
        if (weights is not None and weights.lower() not in RANDOM_WEIGHTS) or num_classes is not None:
            raise VQError(f"{spec} is a checkpoint: it has its own weights and classes "
                          f"(--weights and --classes apply to model names)", usage=True)
        return _from_checkpoint(spec)
    if weights is not None and weights.lower() in RANDOM_WEIGHTS:
        weights = None
    if weights is not None:
        from vqtool.models.weights import pretrained_classifier

        pretrained = pretrained_classifier(spec, weights, num_classes, allow_partial=allow_partial)
        return InspectedModel(pretrained.model.eval(), pretrained.preprocess, f"{spec}, weights {pretrained.source}")
    return _random_init(spec, num_classes)


def _from_checkpoint(path: str) -> InspectedModel:
    from vqtool.classification.checkpoints.format import load_checkpoint

    checkpoint = load_checkpoint(path)
    return InspectedModel(checkpoint.model.eval(), checkpoint.preprocess,
                   f"{checkpoint.meta['architecture']} checkpoint {checkpoint.path}")


def _random_init(name: str, num_classes: int | None) -> InspectedModel:
    from vqtool.models.weights import entry_preprocess
    from vqtool.registry import create_model, get_model

    entry = get_model(name)
    if num_classes is None:
        num_classes = LIBRARY_CLASSES if entry.source in LIBRARY_SOURCES else BUILTIN_CLASSES
    model = create_model(name, num_classes)
    return InspectedModel(model.eval(), entry_preprocess(entry), f"{name} ({num_classes} classes, random weights)")


def prepare_image(path: str | None, preprocess: Preprocess) -> tuple[torch.Tensor, str]:
    """(normalised 1×C×S×S batch, where the image came from), exactly as inference prepares it."""
    image, source = read_photo(path, preprocess.channels)
    pixels = to_tensor(fit_square(image, preprocess.size, preprocess.resize, preprocess.interpolation))
    return Normalizer(preprocess, torch.device("cpu"))(pixels[None]), source


def example_input(preprocess: Preprocess) -> torch.Tensor:
    return torch.zeros(1, preprocess.channels, preprocess.size, preprocess.size)


@torch.no_grad()
def capture_outputs(model: nn.Module, batch: torch.Tensor, modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Each named module's output on ``batch`` (its first call's; the first tensor of a tuple)."""
    outputs = {}

    def keep_first(name, module, inputs, output):
        if name not in outputs:  # a copy: a following in-place ReLU would change the tensor itself
            tensor = first_tensor(output)
            outputs[name] = None if tensor is None else tensor.clone()

    with watching(modules, keep_first):
        run_forward(model, batch)
    return outputs


def run_forward(model: nn.Module, batch: torch.Tensor) -> None:
    try:
        model(batch)
    except RuntimeError as error:  # shape mismatches: the input the user chose does not fit this model
        raise VQError(f"the model cannot take a {shape_text(batch)} input: {first_line(error)}",
                      usage=True) from error


def first_tensor(output) -> torch.Tensor | None:
    """The output itself, or the first tensor of a tuple or list (some blocks return extras)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            tensor = first_tensor(item)
            if tensor is not None:
                return tensor
    return None


def map_layers(inspected: InspectedModel) -> dict[str, tuple[str, list[int]]]:
    """name -> (type, C×H×W) for the conv, pooling and block modules whose output is a stack of maps."""
    modules = dict(inspected.model.named_modules())
    del modules[""]  # the whole model: its output is the logits
    outputs = capture_outputs(inspected.model, example_input(inspected.preprocess), modules)
    return {name: (type(module).__name__, list(outputs[name].shape[1:])) for name, module in modules.items()
            if is_maps(outputs.get(name)) and (isinstance(module, MAP_MODULES) or any(module.children()))}


def is_maps(output) -> bool:
    return isinstance(output, torch.Tensor) and output.dim() == 4


def feature_maps(inspected: InspectedModel, batch: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """name -> C×H×W activations of each named layer (any module, listed or not) for a batch of one image."""
    modules = dict(inspected.model.named_modules())
    for name in names:
        if not name or name not in modules:
            raise VQError(f"unknown layer {name!r}{suggest(name, map_layers(inspected))}; "
                          f"run without --layer to list them", usage=True)
    outputs = capture_outputs(inspected.model, batch, {name: modules[name] for name in names})
    for name in names:
        if not is_maps(outputs.get(name)):
            what = "is never run by the model" if name not in outputs else \
                f"gives a {shape_text(outputs[name])} output, not feature maps"
            raise VQError(f"layer {name!r} {what}; run without --layer to list them", usage=True)
    return {name: outputs[name][0] for name in names}


def shape_text(tensor: torch.Tensor | None) -> str:
    """C×H×W of a batch of one, as 64x56x56."""
    return "x".join(map(str, tensor.shape[1:])) if tensor is not None else "non-tensor"


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {name: module for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}


def conv_filters(inspected: InspectedModel, name: str | None = None) -> tuple[str, torch.Tensor]:
    """(layer name, O×I×kH×kW weights) of a conv layer, by default the first one."""
    convs = conv_layers(inspected.model)
    if not convs:
        raise VQError(f"{inspected.source} has no Conv2d layer")
    name = next(iter(convs)) if name is None else name
    if name not in convs:
        shown = ", ".join(list(convs)[:6]) + (f"... ({len(convs)} in all)" if len(convs) > 6 else "")
        raise VQError(f"{name!r} is not a Conv2d layer of this model{suggest(name, convs)}; conv layers: {shown}",
                      usage=True)
    return name, convs[name].weight.detach()


def save_feature_maps(maps: dict[str, torch.Tensor], folder: Path, source: str, scale: str = "channel", *,
                      replace: bool = False) -> list[Path]:
    """``<layer>-maps.png`` per layer: one grid cell per channel, titled with ``source`` (the model) and the layer."""
    return [save_feature_grid(values, folder / f"{name}-maps.png", f"{short_paths(source)}, layer {name}", scale,
                              replace=replace)
            for name, values in maps.items()]


def save_filters(name: str, weight: torch.Tensor, folder: Path, source: str, scale: str = "shared", *,
                 replace: bool = False) -> Path:
    """``<layer>-filters.png``: one grid cell per output channel, titled with ``source`` and the layer."""
    return save_filter_grid(weight, folder / f"{name}-filters.png", f"{short_paths(source)}, layer {name}", scale,
                            replace=replace)


def short_paths(text: str) -> str:
    """A title's file paths by their last two parts (``.../weights/lite0.safetensors``): the full path is in the
    log and the JSON, a figure's title has the width of the figure."""
    def shorten(word: str) -> str:
        parts = Path(word).parts
        return str(Path("…", *parts[-2:])) if "/" in word and len(parts) > 2 else word

    return " ".join(shorten(word) for word in text.split(" "))
