"""Where vqtool keeps what it fetches and builds for the user: one folder, ``$VQTOOL_CACHE_DIR`` (default
``~/.cache/vqtool``), holding the store's entries, the classic datasets (``data/``), YOLO weights (``weights/``) and
Ultralytics' settings (``ultralytics/``), each movable on its own by its variable."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "VQTOOL_CACHE_DIR"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vqtool").expanduser()


def default_data_dir() -> str:
    """Where the classics (MNIST, Fashion-MNIST, CIFAR-10) are: ``$VQTOOL_DATA_DIR``, else ``<cache>/data``."""
    return os.environ.get("VQTOOL_DATA_DIR") or str(cache_dir() / "data")
