"""A run's state while it trains and after: ``status.json``, the epochs it has committed, and the note after Ctrl-C.

Every training job writes ``RUN/status.json`` (:func:`job_status`) when it
starts (``running``, with its process id and host) and when it ends
(``finished``, or ``interrupted`` by Ctrl-C, SIGTERM or an error). A run still
``running`` whose process is gone (SIGKILL, a crash) reads as ``interrupted``.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shlex
import socket
import time
from pathlib import Path

from vqtool.errors import VQError, first_line, note_interrupt
from vqtool.files import read_text
from vqtool.runs.atomic_files import read_json, write_json
from vqtool.runs.commit import commit, committed

STATUS_FILE = "status.json"
RUNNING, FINISHED, INTERRUPTED = "running", "finished", "interrupted"
PRUNED = "pruned"  # stopped by vqtool tune's pruner: an error whose ``run_status`` is PRUNED ends the block


@contextlib.contextmanager
def job_status(run_dir: Path, *, model: str, dataset: str):
    """``running`` while the block trains the run, then ``finished``, or ``interrupted`` when it raises
    (Ctrl-C, SIGTERM, an error); rank 0 writes it. A resumed run keeps its first start date."""
    from vqtool.compute import distributed

    if not distributed.is_main():
        yield
        return
    path = Path(run_dir) / STATUS_FILE
    previous = read_json(path) if path.is_file() else {}
    record = {"status": RUNNING, "model": previous.get("model") or model, "dataset": previous.get("dataset") or dataset,
              "started": previous.get("started", _now()), "pid": os.getpid(), "host": socket.gethostname()}
    _write_status(path, record)
    try:
        yield
    except BaseException as error:
        _write_status(path, {**record, "status": getattr(error, "run_status", INTERRUPTED), "stopped": _now()})
        raise
    _write_status(path, {**record, "status": FINISHED, "finished": _now()})


@contextlib.contextmanager
def training_status(run_dir: Path, *, command: str, model: str, dataset: str, epochs: int, draw_curves=None):
    """:func:`job_status` around training; on Ctrl-C or SIGTERM, a note for the line that ends the command: the
    epoch the folder holds and the command that continues it. ``draw_curves(path, rows)``, when given, first draws
    the committed epochs' curves.png (in one more commit) for a run that draws them only at its end."""
    from vqtool.compute import distributed

    with job_status(run_dir, model=model, dataset=dataset):
        try:
            yield
        except KeyboardInterrupt as interrupt:
            if distributed.is_main():
                note_interrupt(interrupt, _after_interrupt(Path(run_dir), command, epochs, draw_curves))
            raise


def _after_interrupt(run_dir: Path, command: str, epochs: int, draw_curves) -> str:
    rows = history(run_dir)
    folder = shlex.quote(str(run_dir))
    if not rows:
        return f"{folder} holds no epoch yet (interrupted before the first ended): remove it and start again"
    drawn = ""
    if draw_curves is not None:
        try:
            commit(run_dir, {"curves.png": lambda path: draw_curves(path, rows)})
            drawn = " (curves.png drawn)"
        except VQError as error:
            drawn = f" (curves.png not drawn: {first_line(error)})"
    return (f"{folder} holds epoch {int(rows[-1]['epoch'])} of {epochs}{drawn}; continue with: "
            f"vqtool {command} --resume {folder}")


def _write_status(path: Path, record: dict) -> None:
    """Best effort: a disk too full for status.json never fails a run, nor hides the error that stopped it
    (the run then reads as interrupted or running, as its last status says)."""
    try:
        write_json(path, record)
    except VQError:
        pass


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def history(run_dir: Path) -> list[dict]:
    """The committed metrics.csv as rows of numbers (empty cells None)."""
    path = committed(run_dir, "metrics.csv")
    if not path.is_file():
        return []
    try:
        rows = list(csv.DictReader(read_text(path).splitlines()))
    except (OSError, ValueError, csv.Error) as error:
        raise VQError(f"{path}: cannot read ({error.strerror if isinstance(error, OSError) else first_line(error)})"
                      ) from error
    return [{key: _number(value) for key, value in row.items()} for row in rows]


def _number(text: str | None):
    if text in (None, ""):
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def run_status(run_dir: Path, status: dict, detector: bool) -> str:
    """finished, pruned, running (its process is alive, or on another host: it cannot be told), else interrupted."""
    if status.get("status") in (FINISHED, INTERRUPTED, PRUNED):
        return status["status"]
    if status.get("status") == RUNNING and (status.get("host") != socket.gethostname() or alive(status.get("pid"))):
        return RUNNING
    if not status and _finished_without_status(run_dir, detector):  # a run from before status.json
        return FINISHED
    return INTERRUPTED


def alive(pid) -> bool:
    """Whether process ``pid`` of this host is still running."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _finished_without_status(run_dir: Path, detector: bool) -> bool:
    if detector:
        return (run_dir / "model.pt").is_file()
    model_json = committed(run_dir, "model.json")
    metrics = read_json(model_json).get("metrics", {}) if model_json.is_file() else {}
    return "test_top1" in metrics or "test_map" in metrics
