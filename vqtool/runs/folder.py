"""Run folders: where a command's outputs go, written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from vqtool.errors import VQError


def new_run_dir(command: str, out: str | None) -> Path:
    """Create the run folder; an existing non-empty folder is never reused silently."""
    path = Path(out) if out else Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise VQError(f"{path} already exists; choose another --out, or continue it with --resume {path}",
                      usage=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside ``path``, then rename over it: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(path: Path, save) -> None:
    """``save(file_path)`` writes to a temporary path that is then renamed to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, document) -> None:
    atomic_write(path, json.dumps(document, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as error:  # ValueError: not UTF-8, or not JSON
        raise VQError(f"{path}: cannot read ({error})") from error


def write_args(run_dir: Path, command: str, args: dict) -> None:
    write_json(run_dir / "args.json", {"command": command, "argv": sys.argv[1:], "args": args})


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, buffer.getvalue())
