"""The shapes of per-image classification results: ``predict``'s records and ``eval --predictions`` rows.

A record is one JSON object (JSON Lines) or one CSV row per image. Keys are
stable: ``path``, ``frame`` (video frames only), ``width``, ``height``,
``class``, ``confidence`` and ``top`` (the K most likely classes, most likely
first, each ``{"class", "class_id", "confidence"}``). ``eval --predictions``
rows carry ``path`` (when the images are files), ``true``, ``class``,
``confidence`` and ``top``. Confidences are softmax probabilities rounded to
6 decimals.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from vqtool.errors import VQError
from vqtool.runs.folder import check_output
from vqtool.runs.atomic_files import atomic_write

DECIMALS = 6
IMAGE_COLUMNS = ["path", "frame", "width", "height", "class", "confidence"]
EVAL_COLUMNS = ["path", "true", "class", "confidence"]
PREDICTION_SUFFIXES = (".csv", ".jsonl")


def ranked(probabilities: torch.Tensor, classes: list[str], k: int) -> list[list[dict]]:
    """Each row's ``k`` most likely classes (at most all of them), most likely first."""
    values, indices = probabilities.float().topk(min(k, probabilities.shape[1]), dim=1)
    return [[{"class": classes[i], "class_id": i, "confidence": round(v, DECIMALS)} for v, i in zip(row, ids)]
            for row, ids in zip(values.tolist(), indices.tolist())]


def image_record(path: str, frame: int | None, size: tuple[int, int], top: list[dict]) -> dict:
    """``predict``'s record of one image (or video frame)."""
    record: dict = {"path": path}
    if frame is not None:
        record["frame"] = frame
    record.update(width=size[0], height=size[1], **{"class": top[0]["class"]}, confidence=top[0]["confidence"],
                  top=top)
    return record


def top_columns(k: int) -> list[str]:
    return [name for rank in range(1, k + 1) for name in (f"top{rank}_class", f"top{rank}_confidence")]


def csv_line(values: list) -> str:
    """One CSV row as text, quoted where a value needs it (paths with commas)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(["" if v is None else v for v in values])
    return buffer.getvalue()


def csv_values(record: dict, columns: list[str]) -> list:
    """A record's values under ``columns``, then its top-k as class, confidence pairs."""
    return [record.get(name) for name in columns] + [v for t in record["top"] for v in (t["class"], t["confidence"])]


# --- eval --predictions ---------------------------------------------------------------------------------


def check_predictions_file(path: str | Path) -> Path:
    """``--predictions FILE``, refused before anything runs: a .csv or .jsonl file that does not exist yet."""
    path = Path(path)
    if path.suffix.lower() not in PREDICTION_SUFFIXES:
        raise VQError(f"--predictions {path}: name a .csv or .jsonl file", usage=True)
    check_output(path, overwrite=True, option="--predictions")  # never a run folder's own file
    if path.exists():
        raise VQError(f"--predictions {path} already exists; choose another name (vqtool does not replace it)",
                      usage=True)
    return path


def evaluation_rows(logits: torch.Tensor, labels: torch.Tensor, classes: list[str], files: list[str] | None,
                    k: int = 5) -> list[dict]:
    """One row per evaluated image, in the split's order."""
    rows = []
    for index, top in enumerate(ranked(logits.float().softmax(1), classes, k)):
        row = {"path": files[index]} if files is not None else {}
        row.update(true=classes[int(labels[index])], **{"class": top[0]["class"]},
                   confidence=top[0]["confidence"], top=top)
        rows.append(row)
    return rows


def write_predictions(path: Path, rows: list[dict], k: int) -> None:
    """The rows as JSON Lines or CSV (by the suffix), written atomically, never over an existing file."""
    if path.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(row) + "\n" for row in rows)
    else:
        lines = [csv_line(EVAL_COLUMNS + top_columns(k))] + [csv_line(csv_values(row, EVAL_COLUMNS)) for row in rows]
        text = "\n".join(lines) + "\n"
    atomic_write(path, text, replace=False)
