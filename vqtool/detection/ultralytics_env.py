"""The one place that prepares Ultralytics for vqtool: offline, quiet, no telemetry, no installs, no stray files.

Every vqtool module gets Ultralytics through :func:`load_ultralytics`, never by
importing it directly: most of these settings are read once, when Ultralytics
is first imported, and the rest must be in its settings file before that.

What is set, and why:

- ``YOLO_OFFLINE=1``: Ultralytics' online flag is false, so no DNS probe at
  import, no telemetry events, no crash reports, no hub or version checks.
- ``YOLO_AUTOINSTALL=0`` and ``ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS=1``: a
  missing optional package is an error, never a ``pip install`` at run time.
- ``YOLO_VERBOSE=0``: no progress bars or per-image lines; vqtool prints its
  own progress. Ultralytics' log (errors, or everything with ``--debug``)
  goes to stderr, never stdout.
- ``YOLO_CONFIG_DIR`` points into vqtool's cache folder, so no
  ``~/.config/Ultralytics/settings.json`` appears; the settings written there
  turn off sync and every experiment-tracker integration and point the
  weights, datasets and runs folders at vqtool's own.
- A local copy of matplotlib's DejaVu Sans stands in for ``Arial.ttf``, which
  Ultralytics otherwise tries to download before drawing or loading a dataset.
- ``torch.load`` and ``numpy.load`` check every pickle before Ultralytics
  unpickles it (:func:`vqtool.pickles.guard_loaders`).
- Importing Ultralytics sets ``OMP_NUM_THREADS=1``, and its CPU device
  selection calls ``torch.set_num_threads(1)`` on small machines; both are
  undone (:func:`keeping_threads` wraps each Ultralytics call).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

ENVIRONMENT = {
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "0",
    "ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS": "1",
    "YOLO_VERBOSE": "0",
}
QUIET_SETTINGS = {
    "sync": False,
    "clearml": False,
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "vscode_msg": False,
    "openvino_msg": False,
}
FONTS = ("Arial.ttf", "Arial.Unicode.ttf")  # the names Ultralytics looks for (the second for non-ASCII labels)

_state: dict = {"module": None, "threads": None}


def vqtool_home() -> Path:
    """vqtool's cache folder: ``$VQTOOL_HOME`` (for Ultralytics' files alone), else ``$VQTOOL_CACHE_DIR``."""
    from vqtool.data.locations import cache_dir

    return Path(os.environ.get("VQTOOL_HOME") or cache_dir()).expanduser()


def weights_dir() -> Path:
    """Where bare model names (``yolov8n.pt``) are found: ``$VQTOOL_WEIGHTS_DIR``, else ``<home>/weights``."""
    return Path(os.environ.get("VQTOOL_WEIGHTS_DIR") or vqtool_home() / "weights").expanduser()


def config_dir() -> Path:
    """The folder Ultralytics treats as its user config folder (settings.json, fonts)."""
    return vqtool_home() / "ultralytics" / "Ultralytics"


def load_ultralytics():
    """The ``ultralytics`` module, prepared as described above (once per process).

    Its log shows warnings and progress only with vqtool's ``--debug``.
    """
    from vqtool.errors import debug_enabled

    if _state["module"] is None:
        _state["module"] = _import_prepared()
    logging.getLogger("ultralytics").setLevel(logging.INFO if debug_enabled() else logging.ERROR)
    return _state["module"]


def _import_prepared():
    import torch

    from vqtool.pickles import guard_loaders

    guard_loaders()  # every checkpoint, teacher or label cache Ultralytics unpickles is checked first
    threads = torch.get_num_threads()
    omp_before = os.environ.get("OMP_NUM_THREADS")
    os.environ.update(ENVIRONMENT)
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir().parent)
    _write_settings(config_dir())
    _install_fonts(config_dir())
    import ultralytics

    if omp_before is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    torch.set_num_threads(threads)
    _state["threads"] = threads
    _log_to_stderr(logging.getLogger("ultralytics"))
    return ultralytics


def _write_settings(folder: Path) -> None:
    """Merge vqtool's values into Ultralytics' settings file before Ultralytics reads it."""
    from vqtool.data.locations import default_data_dir
    from vqtool.runs.atomic_files import write_json

    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "settings.json"
    try:
        current = json.loads(file.read_text())
    except (OSError, ValueError):
        current = {}
    wanted = {**current, **QUIET_SETTINGS, "weights_dir": str(weights_dir()),
              "datasets_dir": str(Path(default_data_dir()).expanduser()), "runs_dir": str(folder.parent / "runs")}
    if wanted != current:
        write_json(file, wanted)


def _install_fonts(folder: Path) -> None:
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in FONTS:
        if not (folder / name).is_file():
            shutil.copyfile(source, folder / name)


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record is logged."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _log_to_stderr(logger: logging.Logger) -> None:
    """Ultralytics logs to stdout, where vqtool writes results; move its handler to stderr."""
    for handler in list(logger.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, _CurrentStderr):
            replacement = _CurrentStderr()
            replacement.setFormatter(handler.formatter)
            logger.removeHandler(handler)
            logger.addHandler(replacement)


@contextlib.contextmanager
def keeping_threads():
    """Run Ultralytics code, then give torch back the thread count it had before Ultralytics changed it."""
    import torch

    try:
        yield
    finally:
        if _state["threads"]:
            torch.set_num_threads(_state["threads"])


@contextlib.contextmanager
def integrations(names, *, environment: dict[str, str]):
    """Ultralytics' own integrations ``names`` (tensorboard, mlflow) on for the trainings run inside, with
    ``environment`` set (MLflow's experiment and run); only in memory, so its settings file stays as it is.

    Ultralytics reads these settings when it creates a trainer. Its DDP workers (a detector on several GPUs)
    read the settings file instead, so they log nothing."""
    from ultralytics.utils import SETTINGS

    saved = {name: SETTINGS.get(name) for name in names}
    previous = {variable: os.environ.get(variable) for variable in environment}
    for name in names:
        dict.__setitem__(SETTINGS, name, True)  # dict's own: SETTINGS[name] = ... would rewrite the file
    os.environ.update(environment)
    try:
        yield
    finally:
        for name, value in saved.items():
            dict.__setitem__(SETTINGS, name, value)
        for variable, value in previous.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
