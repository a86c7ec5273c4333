"""Pretrained weights for registry architectures: torchvision enums, timm tags and local files.

``--weights`` is one of:

- ``DEFAULT`` (or nothing): the architecture's default pretrained weights;
- a torchvision enum name (``IMAGENET1K_V1``, or ``ResNet18_Weights.IMAGENET1K_V1``);
- a timm pretrained tag (``timm/resnet18.a1_in1k``, ``resnet18.a1_in1k`` or just ``a1_in1k``);
- a local file (``.pth``, ``.pt``, ``.bin``, ``.safetensors``): a state dict in the library's own key
  layout, bare or inside ``{"state_dict": ...}`` / ``{"model": ...}``, ``module.`` prefixes allowed.

Named weights come from the libraries' usual caches (``$TORCH_HOME/hub/checkpoints``, the Hugging
Face cache). A cached file is used without any network call; a missing one is downloaded only after
a quick check that the host answers, so an offline machine gets one clear message within seconds
instead of minutes of retries. Preprocessing (size, crop ratio, interpolation, mean and std) comes
from the weights' own recipe. Local files load with ``weights_only=True``; torch.hub loads
torchvision's with ``weights_only=False``, so a cached one is checked first, and whatever the libraries
unpickle is checked by the guarded loaders (:func:`vqtool.pickles.guard_loaders`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vqtool.data.pipeline import Preprocess
from vqtool.errors import VQError, first_line
from vqtool.online import reachable
from vqtool.pickles import TORCHVISION_WEIGHTS, check, guard_loaders

FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
TORCHVISION_HOST = "download.pytorch.org"
HUGGING_FACE_HOST = "huggingface.co"


@dataclass
class Pretrained:
    """A model with pretrained weights, how its inputs must be prepared, and notes on the loading."""

    model: nn.Module
    preprocess: Preprocess
    source: str  # what was loaded, for logs and the checkpoint
    notes: list[str] = field(default_factory=list)  # missing, unexpected or dropped keys
    head: str | None = None  # the new classifier's module name, once one is put on


def pretrained_classifier(name: str, weights: str | None = None, num_classes: int | None = None,
                          head: str = "linear", allow_partial: bool = False) -> Pretrained:
    """Registry architecture ``name`` with ``weights``; a new ``head`` for ``num_classes`` when given.

    A weights file that fills less than half of the backbone is refused unless ``allow_partial``.
    """
    from vqtool.models.surgery import replace_head
    from vqtool.registry import get_model

    guard_loaders()  # torch.hub and timm unpickle what they find in their caches
    entry = get_model(name)
    spec = None if weights in (None, "", "DEFAULT", "default") else str(weights)
    if spec is not None and _is_file_spec(spec):
        pretrained = _from_file(entry, Path(spec).expanduser(), allow_partial)
    elif entry.source == "torchvision":
        pretrained = _torchvision(entry.name, spec)
    elif entry.source == "timm":
        pretrained = _timm(entry.name, spec)
    else:
        raise VQError(f"{name} has no named pretrained weights; pass --weights PATH to a state dict file",
                      usage=True)
    if num_classes is not None:
        try:
            pretrained.head = replace_head(pretrained.model, num_classes, head)
        except ValueError as error:
            raise VQError(f"--head {head}: {first_line(error)}", usage=True) from error
    return pretrained


def _is_file_spec(spec: str) -> bool:
    path = Path(spec).expanduser()
    return path.is_file() or path.suffix.lower() in FILE_SUFFIXES or spec.startswith((".", "~", "/"))


# --- local files ----------------------------------------------------------------------------------


def _from_file(entry, path: Path, allow_partial: bool = False) -> Pretrained:
    """The architecture built at the file's class count, then loaded; keys that do not fit are reported."""
    from vqtool.models.surgery import find_head

    state = read_state_dict(path)
    probe = entry.build(1, entry.in_channels)
    head = find_head(probe)
    head_weight = state.get(f"{head}.weight")
    num_classes = head_weight.shape[0] if head_weight is not None and head_weight.dim() >= 1 else 1000
    model = entry.build(num_classes, entry.in_channels)
    notes = load_matching(model, state)
    loaded, total = backbone_coverage(model, state, head)
    if loaded < MIN_BACKBONE_COVERAGE * total and not allow_partial:
        raise VQError(f"--weights {path}: only {loaded:,} of the {total:,} backbone parameters of {entry.name} "
                      f"({loaded / max(total, 1):.0%}) are in the file; is it a state dict of another architecture? "
                      f"Pass --allow-partial-weights to use it anyway", usage=True)
    return Pretrained(model, entry_preprocess(entry), str(path), notes)


MIN_BACKBONE_COVERAGE = 0.5  # below this share of the backbone loaded, the weights are of another model


def backbone_coverage(model: nn.Module, state: dict[str, torch.Tensor], head: str | None) -> tuple[int, int]:
    """(values loaded from ``state``, values in all) of the model's floating-point tensors outside the head."""
    loaded = total = 0
    for key, tensor in model.state_dict().items():
        if (head and key.startswith(f"{head}.")) or not tensor.is_floating_point():
            continue
        total += tensor.numel()
        source = state.get(key)
        if source is not None and source.shape == tensor.shape:
            loaded += tensor.numel()
    return loaded, total


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a weights file: unwrapped, ``module.`` prefixes removed, tensors only."""
    if not path.is_file():
        raise VQError(f"--weights {path}: no such file", usage=True)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip, safetensors and OS errors all mean an unusable file
        raise VQError(f"--weights {path}: not a readable state dict ({first_line(error)}); save model.state_dict(), "
                      f"not the model object", usage=True) from error
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise VQError(f"--weights {path}: holds no state dict of tensors", usage=True)
    return {key.removeprefix("module."): value for key, value in state.items() if isinstance(value, torch.Tensor)}


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load what fits; notes on keys with other shapes (dropped), missing and unexpected keys."""
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    usable = {k: v for k, v in state.items() if k not in mismatched}
    result = model.load_state_dict(usable, strict=False)
    if not set(usable) & set(own):
        raise VQError("--weights: none of the file's keys belong to this architecture "
                      "(is it a state dict of another model?)", usage=True)
    notes = []
    for label, keys in (("dropped (shape differs)", mismatched), ("missing (left at random init)",
                                                                  result.missing_keys),
                        ("unexpected (ignored)", result.unexpected_keys)):
        if keys:
            shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            notes.append(f"{len(keys)} {label}: {shown}")
    return notes


def entry_preprocess(entry) -> Preprocess:
    """The registry entry's recipe (the default weights' size, crop, interpolation and statistics)."""
    return Preprocess(size=entry.input_size, channels=entry.in_channels,
                      mean=entry.mean or (0.5,) * entry.in_channels, std=entry.std or (0.5,) * entry.in_channels,
                      resize=entry.extra.get("resize"), interpolation=entry.extra.get("interpolation", "bilinear"))


# --- torchvision ----------------------------------------------------------------------------------


def _torchvision(name: str, spec: str | None) -> Pretrained:
    from vqtool.models import torchvision_family

    weights = _torchvision_enum(name, spec)
    cached = torchvision_cache_file(weights)
    if cached.is_file():  # torch.hub unpickles it with weights_only=False (a download is checked by its hash)
        check(cached, TORCHVISION_WEIGHTS)
    elif not reachable(TORCHVISION_HOST):
        raise VQError(f"{name} weights {weights} are not cached at {cached} and the network is unreachable; "
                      f"copy the file there (or set TORCH_HOME), or pass --weights PATH to a state dict "
                      f"in torchvision's layout")
    try:
        model = torchvision_family.build(name, len(weights.meta["categories"]), 3, weights=weights)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a corrupt cache file a RuntimeError
        raise VQError(f"{name} weights {weights}: cannot load {cached} ({first_line(error)}); "
                      f"delete it to download again, or pass --weights PATH") from error
    return Pretrained(model, torchvision_family.torchvision_preprocess(weights), f"torchvision {weights}")


def _torchvision_enum(name: str, spec: str | None):
    import torchvision.models

    family = torchvision.models.get_model_weights(name)
    if spec is None:
        return family.DEFAULT
    member = spec.split(".")[-1]
    if spec.startswith("timm/") or member not in family.__members__:
        raise VQError(f"--weights {spec}: not a weights name of {name}; choose from "
                      f"{', '.join(family.__members__)} or pass a file", usage=True)
    return family[member]


def torchvision_cache_file(weights) -> Path:
    """Where ``torch.hub`` keeps (and first looks for) a torchvision weights file."""
    from urllib.parse import urlparse

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


# --- timm -----------------------------------------------------------------------------------------


def _timm(name: str, spec: str | None) -> Pretrained:
    import timm

    from vqtool.models.timm_family import PREFIX, timm_preprocess

    architecture = name.removeprefix(PREFIX)
    tag = _timm_tag(architecture, spec)
    try:
        model = _create_cached_or_downloaded(timm, tag)
    except RuntimeError as error:  # timm's complaint when the architecture has no such pretrained tag
        raise VQError(f"--weights {spec}: {first_line(error)}", usage=True) from error
    return Pretrained(model, timm_preprocess(model.pretrained_cfg), f"timm {tag}")


def _timm_tag(architecture: str, spec: str | None) -> str:
    if spec is None:
        return architecture
    tag = spec.removeprefix("timm/")
    if "." not in tag:
        tag = f"{architecture}.{tag}"
    if tag.split(".")[0] != architecture:
        raise VQError(f"--weights {spec}: weights of {tag.split('.')[0]}, not of {architecture}", usage=True)
    return tag


def _create_cached_or_downloaded(timm, tag: str) -> nn.Module:
    """From the Hugging Face cache with the network off; downloaded only when the hub answers."""
    import huggingface_hub.constants as hub

    offline = hub.HF_HUB_OFFLINE
    try:
        hub.HF_HUB_OFFLINE = True
        return timm.create_model(tag, pretrained=True)
    except (OSError, ValueError) as error:  # LocalEntryNotFoundError is an OSError
        if offline or not reachable(HUGGING_FACE_HOST):
            raise VQError(f"timm weights {tag} are not in the Hugging Face cache ({hub.HF_HUB_CACHE}) and the "
                          f"network is unreachable; download them on a networked machine, or pass "
                          f"--weights PATH to a state dict in timm's layout (.safetensors or .pth)") from error
    finally:
        hub.HF_HUB_OFFLINE = offline
    try:
        return timm.create_model(tag, pretrained=True)
    except OSError as error:
        raise VQError(f"downloading timm weights {tag} failed ({first_line(error)})") from error
