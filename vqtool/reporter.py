"""How the library reports progress and messages without printing: the commands pass it a reporter.

The library never prints and never imports Click or rich. A function that has
something to say takes a ``reporter`` and calls its methods; the commands
implement them (:class:`vqtool.commands.output.Output`: rich on stderr, tables
on stdout), and library callers that want silence pass :data:`SILENT`.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Protocol


class Reporter(Protocol):
    """What a long-running library call may tell the person or program that started it."""

    debug: bool  # whether third-party libraries may speak too (their logs, warnings, progress)

    def log(self, message: str) -> None:
        """A line of progress news (stderr; hidden by --quiet)."""

    def warn(self, message: str) -> None:
        """Something the user should know even with --quiet: skipped files, suspicious data."""

    def progress(self, description: str, total: int | None) -> ContextManager[Callable[..., None]]:
        """A context manager yielding ``advance(n=1)``, called as work completes."""

    def table(self, columns: list[str], rows: list[list], title: str | None = None) -> None:
        """A table of results."""


class SilentReporter:
    """A reporter that says nothing: for library use from Python, and for tests."""

    debug = False

    def log(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def progress(self, description: str, total: int | None):
        return contextlib.nullcontext(lambda n=1: None)

    def table(self, columns, rows, title=None) -> None:
        pass


SILENT = SilentReporter()


def plural(count: int, noun: str) -> str:
    """``3 images``, ``1 image``: how messages count things."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
