"""Every torchvision classification architecture, by its torchvision name."""

from __future__ import annotations

from functools import lru_cache

from vqtool.data.pipeline import Preprocess
from vqtool.models.surgery import adapt_input_channels
from vqtool.registry import ModelEntry, register_model_family

# Architectures whose position embeddings or windows pin the input size.
FIXED_SIZE_PREFIXES = ("vit_", "maxvit")
# Auxiliary classifiers change the training output into a tuple; vqtool trains the main head only.
NO_AUX = ("googlenet", "inception_v3")


@lru_cache(maxsize=None)
def names() -> tuple[str, ...]:
    import torchvision.models

    return tuple(torchvision.models.list_models(module=torchvision.models))


def default_weights(name: str):
    import torchvision.models

    return torchvision.models.get_model_weights(name).DEFAULT


def build(name: str, num_classes: int, in_channels: int, weights=None, **kwargs):
    import torchvision.models

    if name in NO_AUX:
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", weights is None)
    model = torchvision.models.get_model(name, weights=weights, num_classes=num_classes, **kwargs)
    return adapt_input_channels(model, in_channels)


def torchvision_preprocess(weights) -> Preprocess:
    """The preprocessing torchvision's ``weights.transforms()`` applies, as vqtool's Preprocess."""
    preset = weights.transforms()
    return Preprocess(size=preset.crop_size[0], channels=3, mean=tuple(preset.mean), std=tuple(preset.std),
                      resize=preset.resize_size[0], interpolation=preset.interpolation.value)


def resolve(name: str) -> ModelEntry:
    weights = default_weights(name)
    preprocess = torchvision_preprocess(weights)
    return ModelEntry(
        name=name,
        build=lambda num_classes, in_channels: build(name, num_classes, in_channels),
        source="torchvision",
        input_size=preprocess.size,
        fixed_size=name.startswith(FIXED_SIZE_PREFIXES),
        min_size=max(weights.meta.get("min_size", (1, 1))),
        mean=preprocess.mean,
        std=preprocess.std,
        description=f"torchvision {name}",
        extra={"weights": weights.name, "resize": preprocess.resize, "interpolation": preprocess.interpolation},
    )


register_model_family("", names, resolve, source="torchvision")
