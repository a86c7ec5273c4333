"""The checkpoint format: safetensors weights + a JSON document describing them.

Loading never unpickles anything: the JSON says which registry architecture
to build, and safetensors holds only tensors. In a run folder both files are
replaced together with the rest of an epoch (:mod:`vqtool.runs.commit`), and
read through :func:`~vqtool.runs.commit.committed`. The weights file names, in
its safetensors metadata, the epoch whose weights it holds; loading checks it
against model.json's ``metrics.best_epoch`` (files copied from two epochs, or a
folder read while a run was writing it, are refused, not mixed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vqtool import __version__
from vqtool.data.pipeline import Preprocess
from vqtool.classification.checkpoints.paths import META_FILE, WEIGHTS_FILE, resolve_checkpoint
from vqtool.runs.commit import commit
from vqtool.runs.atomic_files import json_text, read_json
from vqtool.errors import VQError, first_line

FORMAT = "vqtool-checkpoint"
FORMAT_VERSION = 1
EPOCH_KEY = "vqtool_epoch"  # safetensors metadata: the epoch whose weights the file holds


@dataclass
class Checkpoint:
    model: torch.nn.Module
    meta: dict
    path: Path

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess.from_dict(self.meta["preprocess"])


def checkpoint_files(model: torch.nn.Module, meta: dict) -> dict:
    """The checkpoint's two files as {name: save(path)}, for :func:`vqtool.runs.commit.commit`."""
    from safetensors.torch import save_model

    state_model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    epoch = meta.get("metrics", {}).get("best_epoch")
    tags = {EPOCH_KEY: str(epoch)} if epoch is not None else None
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "vqtool_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta}
    return {WEIGHTS_FILE: lambda path: save_model(state_model, str(path), metadata=tags),
            META_FILE: lambda path: Path(path).write_text(json_text(document))}


def save_checkpoint(run_dir: Path, model: torch.nn.Module, meta: dict) -> Path:
    """Write weights and metadata as one change; returns the weights path."""
    commit(run_dir, checkpoint_files(model, meta))
    return Path(run_dir) / WEIGHTS_FILE


def read_meta(path: str | Path) -> dict:
    """A checkpoint's model.json, checked: every field vqtool reads is there with the right type."""
    _, meta_path = resolve_checkpoint(path)
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise VQError(f"{path}: not a vqtool checkpoint (no '{FORMAT}' marker in {meta_path.name})", usage=True)
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise VQError(f"{meta_path}: format_version must be a whole number, not {version!r}", usage=True)
    if version > FORMAT_VERSION:
        raise VQError(f"{path}: written by a newer vqtool ({meta.get('vqtool_version')}); upgrade vqtool")
    problem = meta_problem(meta)
    if problem:
        raise VQError(f"{meta_path}: {problem}", usage=True)
    return meta


# field -> (type, what it must be), for the fields loading a checkpoint reads
META_FIELDS = {"architecture": (str, "a model name"), "num_classes": (int, "a positive whole number"),
               "in_channels": (int, "a positive whole number"), "classes": (list, "a list of class names"),
               "preprocess": (dict, "an object"), "model_options": (dict, "an object"),
               "dataset": (dict, "an object")}
OPTIONAL_FIELDS = ("model_options", "dataset")


def meta_problem(meta: dict) -> str | None:
    """What is wrong with a model.json's fields, or None."""
    for name, (kind, wanted) in META_FIELDS.items():
        if meta.get(name) is None and name in OPTIONAL_FIELDS:
            continue
        if name not in meta:
            return f"lacks {name!r} ({wanted})"
        value = meta[name]
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 1):
            return f"{name} must be {wanted}, not {value!r:.60}"
    if not all(isinstance(name, str) for name in meta["classes"]) or len(meta["classes"]) != meta["num_classes"]:
        return f"classes must be {meta['num_classes']} class names (num_classes)"
    try:
        Preprocess.from_dict(meta["preprocess"])
    except ValueError as error:
        return str(error)
    return _dataset_problem(meta.get("dataset") or {})


def _dataset_problem(recorded: dict) -> str | None:
    """The recorded dataset is loaded again by ``eval``: its fields must be what the sources take."""
    kinds = {"source": str, "path": str, "data_dir": str, "seed": int, "val_split": (int, float)}
    for name, kind in kinds.items():
        value = recorded.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            return f"dataset.{name} has the wrong type ({value!r:.60})"
    return None


def build_model(meta: dict) -> torch.nn.Module:
    """The architecture a checkpoint describes, with random weights."""
    from vqtool.models import build_classifier

    try:
        return build_classifier(meta["architecture"], meta["num_classes"], meta["in_channels"],
                                **meta.get("model_options", {}))
    except (TypeError, ValueError, RuntimeError) as error:  # options or sizes the architecture cannot take
        raise VQError(f"model.json describes a {meta['architecture']} that cannot be built ({first_line(error)})",
                      usage=True) from error


def load_checkpoint(path: str | Path) -> Checkpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    weights, _ = resolve_checkpoint(path)
    meta = read_meta(path)
    model = build_model(meta)
    try:
        check_same_epoch(weights, meta)
        load_model(model, str(weights), strict=True)
    except (SafetensorError, RuntimeError, OSError) as error:
        raise VQError(f"{weights}: cannot load weights ({first_line(error)})") from error
    model.eval()
    folder = Path(path) if Path(path).is_dir() else Path(path).parent  # weights may lie in .commit/ meanwhile
    return Checkpoint(model=model, meta=meta, path=folder)


def check_same_epoch(weights: Path, meta: dict) -> None:
    """VQError when the weights are of another epoch than model.json describes (files without tags pass)."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        tagged = (f.metadata() or {}).get(EPOCH_KEY)
    described = meta.get("metrics", {}).get("best_epoch")
    if tagged is not None and described is not None and tagged != str(described):
        raise VQError(f"{weights.parent}: the weights are epoch {tagged}'s but {META_FILE} describes epoch "
                      f"{described}; the two files come from different epochs")
