"""Every timm architecture, named ``timm/<architecture>``."""

from __future__ import annotations

from functools import lru_cache

from vqtool.registry import ModelEntry, register_model_family

PREFIX = "timm/"


@lru_cache(maxsize=None)
def names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def build(name: str, num_classes: int, in_channels: int, **kwargs):
    import timm

    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)


def resolve(name: str) -> ModelEntry:
    import timm

    cfg = timm.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None else {}
    input_size = cfg.get("input_size", (3, 224, 224))
    crop_pct = cfg.get("crop_pct", 0.875)
    min_size = cfg.get("min_input_size") or (3, 1, 1)
    return ModelEntry(
        name=PREFIX + name,
        build=lambda num_classes, in_channels: build(name, num_classes, in_channels),
        source="timm",
        input_size=input_size[-1],
        fixed_size=bool(cfg.get("fixed_input_size", False)),
        min_size=min_size[-1],
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        head=None,
        description=f"timm {name}",
        extra={"resize": round(input_size[-1] / crop_pct), "interpolation": cfg.get("interpolation", "bicubic")},
    )


register_model_family(PREFIX, names, resolve, source="timm")
