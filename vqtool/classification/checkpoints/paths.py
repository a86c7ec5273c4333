"""Where a classifier checkpoint's files are, without torch: commands find a missing or wrong path before
torch loads."""

from __future__ import annotations

from pathlib import Path

from vqtool.classification.checkpoints.export_format import is_exported
from vqtool.errors import VQError
from vqtool.runs.commit import committed

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(weights, metadata) paths for a run folder, a .safetensors file or its .json."""
    path = Path(path)
    if not path.exists():
        raise VQError(f"{path}: no such file or folder", usage=True)
    if path.is_dir():
        weights, meta = committed(path, WEIGHTS_FILE), committed(path, META_FILE)
    elif path.suffix == ".json":
        weights, meta = committed(path.parent, f"{path.stem}.safetensors"), committed(path.parent, path.name)
    else:
        weights, meta = committed(path.parent, path.name), committed(path.parent, f"{path.stem}.json")
    if not weights.is_file() or not meta.is_file():
        raise VQError(f"{path}: not a vqtool checkpoint (expected {WEIGHTS_FILE} and {META_FILE})", usage=True)
    return weights, meta


def check_model_path(path: str | Path) -> None:
    """A usage error unless ``path`` is a checkpoint (see :func:`resolve_checkpoint`) or an exported model file."""
    if not is_exported(path):
        resolve_checkpoint(path)
