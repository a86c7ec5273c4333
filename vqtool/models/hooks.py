"""Watching a model's modules as it runs: one place that registers forward hooks and always removes them."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from torch import nn

Hook = Callable[[str, nn.Module, tuple, object], None]


@contextmanager
def watching(modules: dict[str, nn.Module], hook: Hook, *, before: bool = False) -> Iterator[None]:
    """Within the block, ``hook(name, module, inputs, output)`` runs after each call of each named module.

    ``before=True`` runs it before the call instead, with ``output`` None (the
    inputs are what a module receives, e.g. a classifier head's features). The
    hook's return value is ignored, so it can never replace an output.
    """
    handles = []

    def after_call(name):
        def call(module, inputs, output):
            hook(name, module, inputs, output)
        return call

    def before_call(name):
        def call(module, inputs):
            hook(name, module, inputs, None)
        return call

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(before_call(name)) if before
                           else module.register_forward_hook(after_call(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()
