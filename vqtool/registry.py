"""The model, dataset and task registries.

All are plain dictionaries filled by decorators. Built-ins register when
their modules are imported; third-party packages register the same way from a
module named by an entry point (groups ``vqtool.models``,
``vqtool.datasets`` and ``vqtool.tasks``). Families (every torchvision or timm architecture) are
resolved by name on demand rather than enumerated up front.
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable

from vqtool.catalog import ENTRY_POINT_GROUPS, allowed_entry_points, matching
from vqtool.errors import VQError, VQWarning, suggest

# The modules that register the built-ins, by registry: dataset sources import no torch at import time, so
# `task_of` and dataset checks answer before torch loads; models import it.
BUILTIN_MODULES = {
    "datasets": ("vqtool.data.sources", "vqtool.data.label_files", "vqtool.detection.data"),
    "models": ("vqtool.models.small", "vqtool.models.torchvision_family", "vqtool.models.timm_family"),
    # a task module registers one Task and imports no torch (commands check their options before it loads)
    "tasks": ("vqtool.classification.task", "vqtool.detection.task", "vqtool.multilabel.task"),
}


@dataclass(frozen=True)
class ModelEntry:
    """How to build one architecture for a task.

    ``build(num_classes, in_channels)`` returns an ``nn.Module`` with random
    weights. ``input_size`` is the default square side; ``fixed_size`` says the
    architecture accepts no other. ``head`` is the dotted name of the
    classifier module, or None to find it from the model itself.
    """

    name: str
    build: Callable
    source: str = "builtin"
    input_size: int = 224
    fixed_size: bool = False
    min_size: int = 1
    in_channels: int = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    head: str | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFamily:
    """Architectures resolved by name from a library (``timm/<name>``)."""

    prefix: str
    source: str
    names: Callable[[], Iterable[str]]
    resolve: Callable[[str], ModelEntry]


@dataclass(frozen=True)
class DatasetSource:
    """A named dataset (``digits``) or a path format (``matches(path)`` is true)."""

    name: str
    load: Callable
    source: str = "builtin"
    matches: Callable[[str], bool] | None = None
    task: str = "classification"
    description: str = ""


_MODELS: dict[str, ModelEntry] = {}
_FAMILIES: dict[str, ModelFamily] = {}
_DATASETS: dict[str, DatasetSource] = {}
_TASKS: dict[str, "Task"] = {}
_PLUGINS: dict[str, dict] = {}
_loaded: set[str] = set()  # the registries ("models", "datasets") whose built-ins and plugins are imported


def register_model(name: str | None = None, **meta):
    """Decorator for a factory ``fn(num_classes, in_channels) -> nn.Module``.

    The function's name is the model's name unless ``name`` is given.
    """

    def decorate(factory):
        model_name = name or factory.__name__
        description = meta.pop("description", None) or (factory.__doc__ or "").strip().split("\n")[0]
        source = _record(factory.__module__, "models", model_name)
        _warn_if_shadowing(_MODELS, "model", model_name, source)
        _MODELS[model_name] = ModelEntry(name=model_name, build=factory, source=source, description=description,
                                         **meta)
        return factory

    return decorate


def _warn_if_shadowing(table: dict, kind: str, name: str, source: str) -> None:
    """A second registration under a taken name wins, and says so (as timm's register_model does)."""
    if name in table:
        warnings.warn(f"{kind} {name!r} from {source} replaces the one from {table[name].source}", VQWarning,
                      stacklevel=3)


def register_model_family(prefix: str, names: Callable, resolve: Callable, source: str | None = None) -> None:
    """Architectures named ``prefix + name`` for every name in ``names()``, built by ``resolve(name)``."""
    registrant = _record(resolve.__module__, "models", f"{prefix}*")
    _FAMILIES[prefix] = ModelFamily(prefix=prefix, source=source or registrant, names=names, resolve=resolve)


def register_dataset(name: str, *, matches: Callable[[str], bool] | None = None, **meta):
    """Decorator for ``load(spec, options) -> Dataset``; ``matches`` makes it a path format."""

    def decorate(loader):
        description = meta.pop("description", None) or (loader.__doc__ or "").strip().split("\n")[0]
        source = _record(loader.__module__, "datasets", name)
        _warn_if_shadowing(_DATASETS, "dataset", name, source)
        _DATASETS[name] = DatasetSource(name=name, load=loader, source=source, matches=matches,
                                        description=description, **meta)
        return loader

    return decorate


def _record(module: str, kind: str, name: str) -> str:
    """The distribution a registration comes from ('builtin' for vqtool's own), noted for `vqtool plugins`."""
    top = module.split(".")[0]
    if top == "vqtool":
        return "builtin"
    dist = _distributions().get(top, [top])[0]
    _plugin(dist)[kind].append(name)
    return dist


@lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


def _plugin(dist: str) -> dict:
    return _PLUGINS.setdefault(dist, {"version": _dist_version(dist), "models": [], "datasets": [], "tasks": [],
                                      "error": None})


def load_all() -> None:
    """Import the built-ins, then every allowed plugin (once per process)."""
    for kind in BUILTIN_MODULES:
        load(kind)


def load(kind: str) -> None:
    """Import the built-ins and the allowed plugins of one registry ("models" or "datasets"), once."""
    if kind in _loaded:
        return
    _loaded.add(kind)
    for module in BUILTIN_MODULES[kind]:
        importlib.import_module(module)
    for dist, entry_point in allowed_entry_points(ENTRY_POINT_GROUPS[kind]):
        try:
            entry_point.load()
        except Exception as error:  # a broken plugin must not break vqtool
            _plugin(dist)["error"] = f"{type(error).__name__}: {error}"
            warnings.warn(f"plugin {dist} failed to load: {error}", VQWarning, stacklevel=2)


def _dist_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def loaded(kind: str) -> bool:
    """Whether a registry's built-ins and plugins are imported (then listings show it live, in-process
    registrations included)."""
    return kind in _loaded


def plugins() -> dict[str, dict]:
    load_all()
    return dict(_PLUGINS)


def get_model(name: str) -> ModelEntry:
    """The entry for ``name``; a VQError with close matches when unknown."""
    load("models")
    if name in _MODELS:
        return _MODELS[name]
    for prefix in sorted(_FAMILIES, key=len, reverse=True):
        family = _FAMILIES[prefix]
        if name.startswith(prefix) and name[len(prefix):] in set(family.names()):
            return family.resolve(name[len(prefix):])
    raise VQError(f"unknown model {name!r}{suggest(name, model_names())}; see 'vqtool models'", usage=True)


def model_names(pattern: str | None = None) -> list[str]:
    """Every registered model name, families included, optionally filtered by a wildcard."""
    load("models")
    names = list(_MODELS)
    for prefix, family in _FAMILIES.items():
        names.extend(prefix + n for n in family.names())
    return matching(names, pattern)


def model_source(name: str) -> str:
    if name in _MODELS:
        return _MODELS[name].source
    for prefix in sorted(_FAMILIES, key=len, reverse=True):
        if name.startswith(prefix):
            return _FAMILIES[prefix].source
    return "unknown"


def registered_models() -> dict[str, ModelEntry]:
    load("models")
    return dict(_MODELS)


def create_model(name: str, num_classes: int, in_channels: int | None = None):
    entry = get_model(name)
    return entry.build(num_classes, in_channels or entry.in_channels)


def dataset_sources() -> dict[str, DatasetSource]:
    load("datasets")
    return dict(_DATASETS)


def get_dataset_source(spec: str) -> DatasetSource:
    """The source for a dataset name or path."""
    load("datasets")
    if spec in _DATASETS and _DATASETS[spec].matches is None:
        return _DATASETS[spec]
    for source in _DATASETS.values():
        if source.matches is not None and source.matches(spec):
            return source
    named = [n for n, s in _DATASETS.items() if s.matches is None]
    if os.path.exists(spec):
        raise VQError(f"{spec}: not a dataset vqtool can read (expected a folder of class folders)", usage=True)
    raise VQError(f"no dataset or path named {spec!r}{suggest(spec, named)}; see 'vqtool datasets'", usage=True)


# --- tasks ------------------------------------------------------------------------------------------


@dataclass
class Request:
    """What a command asks of a task: its targets, every option it was given (``params``, by Click parameter
    name, a --recipe's values filled in), those typed on the command line (``typed``), and the reporter."""

    command: str  # train, finetune, eval, confusion
    target: str | None = None  # the checkpoint or weights (eval, confusion)
    dataset: str | None = None
    params: dict = field(default_factory=dict)
    typed: dict = field(default_factory=dict)
    defaulted: frozenset = frozenset()  # the options left at their Click default (not typed, no --config)
    data: object = None  # vqtool.data.DataOptions
    tracking: object = None  # vqtool.runs.trackers.TrackingOptions
    reporter: object = None


class Task:
    """One task (classification, detection, multilabel ...): the data, models and checkpoints it owns, and its
    entry points. A task package registers one subclass with :func:`register_task`; ``vqtool.tasks`` picks the
    task of a command's targets and calls it, so commands never name a task. A task module imports no torch.

    Entry points return plain documents; ``view`` turns a report into what a command prints (a table and
    lines), so printing stays in the commands without knowing the task.
    """

    name = "task"
    default = False  # the task of targets that no task owns (classification)
    order = 100  # asked in this order whether they own a target (a multilabel export before a detector's .onnx)
    options: frozenset = frozenset()  # the training options it takes (Click parameter names); see takes()
    selected_by: frozenset = frozenset()  # options whose typing chooses this task (multilabel's --labels-from)
    config = None  # a dataclass of the train/finetune options only this task has; its fields make the Click options

    def owns(self, target: str) -> bool:
        """Whether ``target`` (a dataset, weights, a checkpoint or an export) is this task's."""
        return False

    def takes(self, command: str) -> frozenset:
        """The training options of `command` this task understands; typed ones it does not are a usage error."""
        return self.options

    def check_training(self, request: Request) -> None:
        """The usage errors of a new train or finetune run (``request.command``) that need no data, raised before
        torch loads (vqtool tune asks once, before its first trial)."""

    def _unsupported(self, what: str):
        return VQError(f"{what} is not available for {self.name} models", usage=True)

    def train(self, request: Request) -> dict:
        raise self._unsupported("training")

    def finetune(self, request: Request) -> dict:
        raise self._unsupported("fine-tuning")

    def evaluate(self, request: Request) -> dict:
        raise self._unsupported("evaluation")

    def confusion(self, request: Request) -> dict:
        raise self._unsupported("confusion")

    def predict(self, sources, weights: str, options):
        """(stream of records and Failures, class names)."""
        raise self._unsupported("predict")

    def export(self, checkpoint: str, options, reporter) -> dict:
        raise self._unsupported("export")

    def view(self, report: dict) -> dict:
        """What a command prints of an eval or confusion report: ``{"table": {"headers", "rows", "title"},
        "lines": [...]}`` (both optional)."""
        return {}

    def predict_output(self, classes: list[str], options) -> dict:
        """How predict prints the records of ``options`` (a PredictOptions): ``{"csv": [columns], "csv_values":
        fn(record) -> list, "table_header": str, "table_row": fn(record) -> str, "summary": an object with
        add(record), failed and lines(seconds)}``."""
        raise self._unsupported("predict")


def register_task(name: str):
    """Class decorator: registers one instance of a :class:`Task` subclass under ``name``."""

    def decorate(cls):
        source = _record(cls.__module__, "tasks", name)
        _warn_if_shadowing(_TASKS, "task", name, source)
        task = cls()
        task.name, task.source = name, source
        _TASKS[name] = task
        return cls

    return decorate


def unregister_task(name: str) -> None:
    """Remove a task (a test's toy task, when the test ends)."""
    _TASKS.pop(name, None)


def registered_tasks() -> dict[str, Task]:
    """Every task by name, in the order they are asked whether they own a target."""
    load("tasks")
    return dict(sorted(_TASKS.items(), key=lambda item: item[1].order))
