"""What `vqtool models`, `datasets` and `plugins` list, known without importing torch, timm or torchvision.

Built-in models, every torchvision and timm architecture, and the built-in dataset
sources are read from the packaged ``catalog.json``, which ``make completions``
writes from the full registry (a test checks it is current). Plugins are known
from the entry points they declare, whose names are by convention the names they
register; importing them (``vqtool plugins --check``) is what tells whether they load.
"""

from __future__ import annotations

import fnmatch
import json
import os
from importlib.metadata import entry_points
from importlib.resources import files

CATALOG_FILE = "catalog.json"
ENTRY_POINT_GROUPS = {"models": "vqtool.models", "datasets": "vqtool.datasets", "tasks": "vqtool.tasks",
                      "commands": "vqtool.commands"}


def packaged() -> dict:
    """``{"models": [row, ...], "datasets": [row, ...]}`` of the built-ins and the library families."""
    path = files("vqtool").joinpath(CATALOG_FILE)
    return json.loads(path.read_text()) if path.is_file() else {"models": [], "datasets": []}


def allowed_entry_points(group: str):
    """(distribution, entry point) for each plugin entry point of ``group`` that VQTOOL_PLUGINS lets load."""
    allowed = os.environ.get("VQTOOL_PLUGINS")
    wanted = None if allowed is None else {p.strip() for p in allowed.split(",") if p.strip()} - {"none"}
    for entry_point in entry_points(group=group):
        dist = entry_point.dist.name if entry_point.dist else entry_point.name
        if wanted is None or dist in wanted or entry_point.name in wanted:
            yield dist, entry_point


def declared_plugins() -> dict[str, dict]:
    """distribution -> {version, models, datasets, error: None}: what each plugin declares, none imported."""
    declared: dict[str, dict] = {}
    for kind, group in ENTRY_POINT_GROUPS.items():
        for dist, entry_point in allowed_entry_points(group):
            version = entry_point.dist.version if entry_point.dist else None
            plugin = declared.setdefault(dist, {"version": version, "models": [], "datasets": [], "tasks": [],
                                                    "commands": [], "error": None})
            plugin[kind].append(entry_point.name)
    return declared


def matching(names, pattern: str | None) -> list:
    """The names matching a wildcard pattern (a plain word matches anywhere in the name), all without one."""
    if not pattern:
        return list(names)
    pattern = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    return [name for name in names if fnmatch.fnmatchcase(name, pattern)]


def model_rows(pattern: str | None = None) -> list[dict]:
    """Rows of `vqtool models`: the packaged ones, then each plugin's declared names (source: the plugin)."""
    rows = packaged()["models"] + [{"name": name, "source": dist}
                                   for dist, plugin in declared_plugins().items() for name in plugin["models"]]
    names = set(matching([row["name"] for row in rows], pattern))
    return [row for row in rows if row["name"] in names]


def dataset_rows() -> list[dict]:
    """Rows of `vqtool datasets`: the packaged ones, then each plugin's declared names."""
    return packaged()["datasets"] + [{"name": name, "kind": None, "task": None, "source": dist, "description": ""}
                                     for dist, plugin in declared_plugins().items() for name in plugin["datasets"]]
