"""Built-in architectures and the adapters that register library families."""

from __future__ import annotations


def build_classifier(name: str, num_classes: int, in_channels: int, **options):
    """A registry architecture for ``num_classes`` and ``in_channels``, with random weights."""
    from vqtool.registry import get_model

    if options:
        from vqtool.errors import VQError

        raise VQError(f"unsupported model options {sorted(options)} for {name}")
    return get_model(name).build(num_classes, in_channels)
