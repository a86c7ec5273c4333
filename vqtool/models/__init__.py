"""Built-in architectures and the adapters that register library families."""

from __future__ import annotations


def build_classifier(name: str, num_classes: int, in_channels: int, head: str = "linear", **options):
    """A registry architecture for ``num_classes`` and ``in_channels``, with random weights.

    ``head="mlp"`` swaps the classifier for a two-layer one, as ``finetune --head mlp`` does.
    """
    from vqtool.errors import VQError
    from vqtool.registry import get_model

    if options:
        raise VQError(f"unsupported model options {sorted(options)} for {name}")
    model = get_model(name).build(num_classes, in_channels)
    if head != "linear":
        from vqtool.models.surgery import replace_head

        replace_head(model, num_classes, head)
    return model
