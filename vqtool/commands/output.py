"""Where things are printed: results on stdout, progress and logs on stderr.

Rich renders tables and progress bars when the stream is a terminal; otherwise
plain lines (or JSON with ``--json``). Rich itself honours NO_COLOR.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass, field

import click
from rich.console import Console
from rich.table import Table

from vqtool.commands import StdoutClosed
from vqtool.errors import VQError, first_line


def _console(stderr: bool) -> Console:
    """The terminal's width on a terminal; otherwise $COLUMNS, else 120."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else _columns_variable() or 120
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def _columns_variable() -> int | None:
    value = os.environ.get("COLUMNS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def _primary_process() -> bool:
    """Under torchrun every rank runs the command; only rank 0 speaks."""
    return os.environ.get("RANK", "0") == "0"


@dataclass
class Output:
    """Per-command output settings, made from the common ``--json/--quiet`` options."""

    json: bool = False
    quiet: bool = False
    silent: bool = field(default_factory=lambda: not _primary_process())

    @property
    def interactive(self) -> bool:
        """Progress bars only for a person watching stderr."""
        return not self.quiet and not self.silent and sys.stderr.isatty()

    def log(self, message: str) -> None:
        if not self.quiet and not self.silent:
            _console(stderr=True).print(message, markup=False, soft_wrap=True)  # a log line is never folded

    def warn(self, message: str) -> None:
        if self.silent:
            return
        _console(stderr=True).print(f"Warning: {message}", markup=False, style="yellow", soft_wrap=True)

    def emit(self, document) -> None:
        """One JSON document (or one JSON Lines record) on stdout; NaN and infinities become null."""
        from vqtool.runs.atomic_files import finite

        if self.silent:
            return
        with stdout_writes():
            click.echo(json.dumps(finite(document), default=_jsonable, allow_nan=False))

    def text(self, message: str = "") -> None:
        if not self.silent:
            with stdout_writes():
                click.echo(message)

    @property
    def width(self) -> int:
        """The width stdout's tables have to fit in."""
        return _console(stderr=False).width

    def table(self, columns: list[str], rows: list[list], title: str | None = None, units: bool = False) -> None:
        """A result table on stdout. ``units``: cells shown by their column's name (``seconds``: ``42.6 s``), and
        never wrapped or cut (the caller chose columns that fit)."""
        if self.silent:
            return
        table = Table(title=title, show_edge=False, header_style="bold")
        for i, name in enumerate(columns):
            numeric = all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
            table.add_column(name, justify="right" if numeric and i > 0 else "left", no_wrap=units)
        for row in rows:
            table.add_row(*(format_field(name, v) if units else format_cell(v) for name, v in zip(columns, row)))
        with stdout_writes():
            _console(stderr=False).print(table)

    def progress(self, description: str, total: int | None):
        """A context manager yielding ``advance(n=1)``; a no-op when not interactive."""
        if not self.interactive:
            return contextlib.nullcontext(lambda n=1: None)
        return _rich_progress(description, total)


@contextlib.contextmanager
def stdout_writes():
    """Results written to stdout: a reader that went away (``| head -1``) ends the command quietly
    (StdoutClosed); a stdout that cannot take them (``> /dev/full``) is one error line."""
    try:
        yield
    except BrokenPipeError as error:
        raise StdoutClosed() from error
    except OSError as error:
        raise VQError(f"cannot write the results to stdout ({error.strerror or first_line(error)})") from error


@contextlib.contextmanager
def _rich_progress(description: str, total: int | None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


# How a summary field is shown for reading, by the end of its name (--json keeps the plain numbers).
UNITS = (("images_per_second", lambda v: f"{v:,.1f} img/s"), ("seconds", lambda v: f"{v:,.2f} s" if v < 10
                                                                  else f"{v:,.1f} s"),
         ("_mb", lambda v: f"{v:,.2f} MB"), ("lr", lambda v: f"{v:.2e}"))


def format_field(key: str, value) -> str:
    """A summary value for a table: ``42.6 s``, ``5.1 img/s``, ``1.61 MB``, ``3.00e-03`` by the key's suffix."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        for suffix, shown in UNITS:
            if key.endswith(suffix):
                return shown(value)
    return format_cell(value)


def format_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
