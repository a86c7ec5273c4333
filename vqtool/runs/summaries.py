"""What run folders hold, one row each: the library side of ``vqtool runs`` and ``vqtool runs compare``.

Its status comes from ``status.json`` (:mod:`vqtool.runs.status`); everything else is read from the run's last committed epoch
(:func:`~vqtool.runs.commit.committed`), so a run being written reads as one epoch.
"""

from __future__ import annotations

import fnmatch
import os
import time
from pathlib import Path

from vqtool.errors import VQError, first_line
from vqtool.reporter import Reporter
from vqtool.runs.atomic_files import read_json
from vqtool.runs.commit import committed
from vqtool.runs.folder import RUN_MARKERS
from vqtool.runs.status import STATUS_FILE, history, run_status
from vqtool.runs.trackers import flatten

# The columns of `vqtool runs`, in order (its JSON rows add val_loss, val_label_accuracy and path). val_top1 for
# classifiers, val_map50_95 for detectors, val_map (macro mAP over the labels, what a multi-label run keeps its best
# epoch by) for multi-label classifiers, whose val_top1 is empty: the share of right label decisions at 0.5 that
# their metrics.csv keeps in its val_top1 column is no top-1 accuracy (the rows' val_label_accuracy).
COLUMNS = ("name", "command", "task", "model", "dataset", "epochs", "best_epoch", "val_top1", "val_map50_95",
           "val_map", "test_top1", "test_map", "seconds", "date", "status")
FINAL_METRICS = ("epochs", "best_epoch", "val_top1", "val_loss", "val_map50_95", "val_map", "val_label_accuracy",
                 "test_top1", "test_map", "seconds", "status")
MULTILABEL = "multilabel"


def find_runs(folders) -> list[Path]:
    """The run folders among ``folders`` and below them (not inside a run folder), in name order.

    Each real folder is visited once, however many links lead to it: a link to a parent (a loop) or a second
    name of a run lists nothing twice.
    """
    found, seen = [], set()
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise VQError(f"{folder}: no such folder", usage=True)
        found.extend(_runs_under(folder, seen))
    return sorted(found, key=lambda path: (str(path.parent), path.name))


def _runs_under(folder: Path, seen: set) -> list[Path]:
    try:
        real = os.path.realpath(folder, strict=True)
        children = [] if is_run(folder) else sorted(folder.iterdir())
    except OSError:  # unreadable, or a loop of links: nothing to list there
        return []
    if real in seen:
        return []
    seen.add(real)
    if is_run(folder):
        return [folder]
    return [run for child in children if not child.name.startswith(".") and child.is_dir()
            for run in _runs_under(child, seen)]


def is_run(folder: Path) -> bool:
    return (folder / "args.json").is_file() and any((folder / marker).exists() for marker in RUN_MARKERS)


def val_curves(run_dir: Path) -> list[dict]:
    """:func:`history` for the val curves of `runs compare --png`: a multi-label run's val_top1 column (the share of
    right label decisions) as val_label_accuracy, so it is not drawn as top-1 accuracy."""
    rows = history(run_dir)
    if read_json(run_dir / "args.json").get("args", {}).get("task") != MULTILABEL:
        return rows
    return [{("val_label_accuracy" if key == "val_top1" else key): value for key, value in row.items()}
            for row in rows]


def describe(run_dir: Path) -> dict:
    """One run folder's row: what was trained, how far, how well, and whether it finished."""
    run_dir = Path(run_dir)
    document = read_json(run_dir / "args.json")
    args, status = document.get("args", {}), _status_record(run_dir)
    rows = history(run_dir)
    detector = "map50_95" in (rows[0] if rows else {}) or "ultralytics" in args
    task = args.get("task") or ("detection" if detector else "classification")  # older runs recorded none
    row = {"name": run_dir.name, "command": document.get("command"), "task": task,
           "model": _model_name(status.get("model") or _recorded_model(args)),
           "dataset": status.get("dataset") or Path(str(args.get("dataset", ""))).stem or None,
           "epochs": len(rows), **(_detector_scores(run_dir, rows) if detector else _classifier_scores(run_dir, task == MULTILABEL)),
           "seconds": _training_seconds(run_dir, rows),
           "date": status.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                          time.localtime((run_dir / "args.json").stat().st_mtime)),
           "status": run_status(run_dir, status, detector)}
    return {column: row.get(column) for column in (*COLUMNS, "val_loss", "val_label_accuracy")} | {"path": str(run_dir)}


def _recorded_model(args: dict) -> str | None:
    return (args.get("config") or {}).get("model") or args.get("model") or args.get("weights")


def _model_name(model: str | None) -> str | None:
    """A detector trained from a weights file or model yaml is named by the file (``best.pt``), not its whole path;
    registry names (``timm/resnet18``) stay as they are."""
    return Path(model).name if model and Path(model).suffix in (".pt", ".pth", ".yaml", ".yml", ".onnx") else model


def _training_seconds(run_dir: Path, rows: list[dict]) -> float:
    """The epochs' seconds (the head's, on cached features) plus the frozen backbone's pass that made the cache."""
    epochs = sum(row.get("seconds") or row.get("head_seconds") or 0 for row in rows)
    model_json = committed(run_dir, "model.json")
    backbone = read_json(model_json).get("backbone_seconds") or 0 if model_json.is_file() else 0
    return round(epochs + backbone, 2)


def _status_record(run_dir: Path) -> dict:
    path = run_dir / STATUS_FILE
    return read_json(path) if path.is_file() else {}


def _classifier_scores(run_dir: Path, multilabel: bool) -> dict:
    """The best epoch's figures; a multi-label run's val_top1 (its share of right label decisions) is named so."""
    model_json = committed(run_dir, "model.json")
    metrics = read_json(model_json).get("metrics", {}) if model_json.is_file() else {}
    top1 = {"val_label_accuracy": metrics.get("val_top1")} if multilabel else {
        "val_top1": metrics.get("val_top1"), "test_top1": metrics.get("test_top1")}
    return {"best_epoch": metrics.get("best_epoch"), "val_loss": metrics.get("val_loss"), **top1,
            "val_map": metrics.get("val_map"), "test_map": metrics.get("test_map")}


def _detector_scores(run_dir: Path, rows: list[dict]) -> dict:
    """Ultralytics keeps the epoch of best fitness, which is mAP50-95."""
    best = max(rows, key=lambda r: r.get("map50_95") or 0, default={})
    return {"best_epoch": best.get("epoch"), "val_map50_95": best.get("map50_95")}


def describe_all(run_dirs, reporter: Reporter) -> list[dict]:
    """:func:`describe` of each run folder; one that cannot be read is a warning, and left out."""
    rows = []
    for run in run_dirs:
        try:
            rows.append(describe(run))
        except (VQError, OSError, ValueError, KeyError, TypeError, AttributeError) as error:  # a damaged file
            reporter.warn(f"{run}: left out, cannot be read ({first_line(error)})")
    return rows


def select(rows: list[dict], filters: list[str], sort: str | None = None, reverse: bool = False) -> list[dict]:
    """Rows matching every ``KEY=VALUE`` filter (VALUE may hold * and ? wildcards), sorted by ``sort``."""
    for expression in filters:
        key, equals, wanted = expression.partition("=")
        if not equals or key not in COLUMNS:
            raise VQError(f"--filter {expression}: use KEY=VALUE with KEY one of {', '.join(COLUMNS)}", usage=True)
        rows = [row for row in rows if fnmatch.fnmatchcase(_text(row[key]), wanted)]
    if sort is not None:
        if sort not in COLUMNS:
            raise VQError(f"--sort {sort}: choose from {', '.join(COLUMNS)}", usage=True)
        present = [row for row in rows if row[sort] is not None]
        present.sort(key=lambda row: (isinstance(row[sort], str), row[sort]), reverse=reverse)
        rows = present + [row for row in rows if row[sort] is None]  # empty cells last either way
    return rows


def _text(value) -> str:
    return "" if value is None else str(value)


def compare(run_dirs) -> dict:
    """The arguments that differ between runs, and their final metrics, side by side (lists in run order)."""
    run_dirs = [Path(run) for run in run_dirs]
    for run in run_dirs:
        if not is_run(run):
            raise VQError(f"{run}: not a vqtool run folder (no args.json)", usage=True)
    arguments = [flatten(read_json(run / "args.json").get("args", {})) for run in run_dirs]
    keys = list(dict.fromkeys(key for args in arguments for key in args))
    missing = object()
    differing = {key: [args.get(key) for args in arguments] for key in keys
                 if len({repr(args.get(key, missing)) for args in arguments}) > 1}
    rows = [describe(run) for run in run_dirs]
    return {"runs": [row["name"] for row in rows], "paths": [str(run) for run in run_dirs],
            "differing_args": differing, "metrics": {key: [row.get(key) for row in rows] for key in FINAL_METRICS}}

