"""Every timm architecture, named ``timm/<architecture>``."""

from __future__ import annotations

import math
from functools import lru_cache

from vqtool.data.pipeline import Preprocess
from vqtool.registry import ModelEntry, register_model_family

PREFIX = "timm/"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@lru_cache(maxsize=None)
def names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def build(name: str, num_classes: int, in_channels: int, **kwargs):
    import timm

    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)


def timm_preprocess(cfg: dict) -> Preprocess:
    """A pretrained config's recipe, as ``timm.data.resolve_data_config`` and its eval transform apply it."""
    size = cfg.get("input_size", (3, 224, 224))[-1]
    crop_pct = cfg.get("crop_pct") or 0.875
    return Preprocess(size=size, channels=3, mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
                      std=tuple(cfg.get("std", IMAGENET_STD)), resize=math.floor(size / crop_pct),
                      interpolation=cfg.get("interpolation") or "bicubic")


def resolve(name: str) -> ModelEntry:
    import timm

    cfg = timm.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None else {}
    preprocess = timm_preprocess(cfg)
    min_size = cfg.get("min_input_size") or (3, 1, 1)
    return ModelEntry(
        name=PREFIX + name,
        build=lambda num_classes, in_channels: build(name, num_classes, in_channels),
        source="timm",
        input_size=preprocess.size,
        fixed_size=bool(cfg.get("fixed_input_size", False)),
        min_size=min_size[-1],
        mean=preprocess.mean,
        std=preprocess.std,
        head=None,
        description=f"timm {name}",
        extra={"resize": preprocess.resize, "interpolation": preprocess.interpolation},
    )


register_model_family(PREFIX, names, resolve, source="timm")
