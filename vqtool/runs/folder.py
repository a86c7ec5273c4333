"""Run folders: where a run's files go, which files are a run's own, what must never be written over, and the
args.json and metrics.csv every run has (each file written whole, by :mod:`vqtool.runs.atomic_files`).
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import sys
import time
from pathlib import Path

from vqtool.errors import VQError, first_line
from vqtool.runs.atomic_files import atomic_write, read_json, write_json

# A run folder's own files: never the target of an export or any other output, whatever --overwrite says.
RUN_FILES = ("model.safetensors", "model.json", "model.pt", "state.pt", "args.json", "metrics.csv", "curves.png",
             "status.json", "mlflow.json")
RUN_MARKERS = ("args.json", "model.json", "state.pt")  # a folder holding one of these is a run folder
# A run folder's own subfolders (Ultralytics' artifacts, an epoch being committed): no file in them is replaced
# from outside (an export may add one beside Ultralytics' weights).
COMMIT_FOLDER = ".commit"
RUN_SUBFOLDERS = ("ultralytics", COMMIT_FOLDER)


def new_run_dir(command: str, out: str | None) -> Path:
    """Create the run folder; an existing non-empty folder is never reused silently.

    Without ``out`` the folder is named by the command and the time, with a
    number added when another run started in the same second: claimed by an
    exclusive mkdir, so concurrent runs never share one.
    """
    if not out:
        return _timestamped_run_dir(Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}")
    path = Path(out)
    problem = output_problem(path, folder=True, empty=True)
    if problem:
        raise VQError(f"--out {path}: {problem}", usage=True)
    _make_run_dir(path, exist_ok=True)
    return path


def _timestamped_run_dir(base: Path) -> Path:
    for number in itertools.count(1):
        path = base if number == 1 else base.with_name(f"{base.name}-{number}")
        try:
            _make_run_dir(path, exist_ok=False)
            return path
        except FileExistsError:
            continue


def _make_run_dir(path: Path, exist_ok: bool) -> None:
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        raise
    except OSError as error:
        raise VQError(f"--out {path}: cannot create it ({error.strerror or first_line(error)})") from error


def output_problem(path, *, folder: bool | None = False, empty: bool = False) -> str | None:
    """Why vqtool could not write the file ``path`` (or, with ``folder``, create and fill that folder; with
    ``folder=None``, either), or None.

    Checked when the option is parsed, before torch is imported, so a bad ``--out`` costs a moment, not a
    model load or an epoch. ``empty``: an existing folder must hold nothing (a run folder is never reused).
    """
    text = os.fspath(path)
    if not text:
        return "an empty path"
    if "\0" in text:
        return "a path with a NUL character"
    if os.path.lexists(text) and not os.path.exists(text):
        return f"a symbolic link to {os.readlink(text)}, which does not exist"
    if os.path.exists(text):
        if folder is not None and folder != os.path.isdir(text):
            return "exists and is a folder" if os.path.isdir(text) else "exists and is not a folder"
        if empty and any(Path(text).iterdir()):
            return _taken_folder(Path(text))
        return _write_problem(text if folder else os.path.dirname(os.path.abspath(text)))
    ancestor = os.path.dirname(os.path.abspath(text))
    while not os.path.exists(ancestor):
        if os.path.lexists(ancestor):
            return f"{ancestor} is a symbolic link to {os.readlink(ancestor)}, which does not exist"
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        return f"{ancestor} is a file, not a folder"
    return _write_problem(ancestor)


def _taken_folder(path: Path) -> str:
    if is_run_folder(path):
        return f"already holds a run; choose another --out, or continue it with --resume {path}"
    return "already exists and holds files; choose another --out (nothing is overwritten)"


def _write_problem(folder: str) -> str | None:
    """Why no file can be created in the existing ``folder``, or None."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{folder} is on a read-only filesystem"
    except OSError as error:
        return f"cannot reach {folder} ({error.strerror})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"no permission to write in {folder}"
    return None


def check_output(path: Path, *, overwrite: bool, option: str = "-o") -> None:
    """The rule for every file a command writes where the user said: refused (usage error) when it is a run
    folder's own file or lies in a run folder's own subfolder, whatever ``overwrite`` says, or when it exists
    unless ``overwrite``."""
    owner = run_folder_owning(path)
    if owner is not None:
        raise VQError(f"{option} {path}: {Path(path).name} is one of the files of the run folder {owner}; vqtool "
                      f"never writes over it (choose another name)", usage=True)
    if os.path.lexists(path) and not overwrite:
        raise VQError(f"{option} {path} already exists; pass --overwrite to replace it, or choose another name",
                      usage=True)


def is_run_folder(folder: Path) -> bool:
    return any((Path(folder) / marker).is_file() for marker in RUN_MARKERS)


def run_folder_owning(path) -> Path | None:
    """The run folder whose own file ``path`` is (judged by the file a link would overwrite), or None: one of its
    files, or a file already in one of its subfolders."""
    target = Path(os.path.realpath(path))
    if target.name in RUN_FILES and is_run_folder(target.parent):
        return target.parent
    if not os.path.lexists(target) and COMMIT_FOLDER not in target.parts:
        return None
    for folder in target.parents:
        if target.relative_to(folder).parts[0] in RUN_SUBFOLDERS and is_run_folder(folder):
            return folder
    return None


def run_arguments(run_dir, command: str) -> dict:
    """The args.json document of a ``command`` run folder that --resume continues (a usage error otherwise)."""
    path = Path(run_dir) / "args.json"
    if not path.is_file():
        raise VQError(f"{run_dir}: not a vqtool run folder (no args.json)", usage=True)
    document = read_json(path)
    recorded = document.get("command") if isinstance(document, dict) else None
    if recorded != command:
        raise VQError(f"{run_dir}: a {recorded} run; continue it with vqtool {recorded} --resume {run_dir}"
                      if recorded in ("train", "finetune") else f"{run_dir}: its args.json records no vqtool "
                      f"training command", usage=True)
    return document


def write_args(run_dir: Path, command: str, args: dict) -> None:
    write_json(run_dir / "args.json", {"command": command, "argv": sys.argv[1:], "args": args})


def metrics_csv(history: list[dict]) -> str:
    """One row per epoch; the columns of every row, in the order they first appear (a resumed run's new columns
    are empty in the epochs before)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(key for row in history for key in row)))
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    if history:
        atomic_write(path, metrics_csv(history))
