"""Printing a stream of per-image results as they arrive: what ``detect`` and ``predict`` share."""

from __future__ import annotations

import sys
import time

import click

FORMATS = ("jsonl", "csv", "table")


def choose_format(out, fmt: str | None) -> str:
    """--format, or JSON Lines for a program reading stdout and a table for a person; --json means jsonl."""
    from vqtool.errors import VQError

    if out.json and fmt not in (None, "jsonl"):
        raise VQError(f"--json prints JSON lines; it cannot be combined with --format {fmt}", usage=True)
    return "jsonl" if out.json else fmt or ("table" if sys.stdout.isatty() else "jsonl")


def print_stream(stream, write, summary, out) -> None:
    """Write each record as soon as it arrives, report each skipped input on one line, end with the summary.

    ``summary`` has ``add(record)``, ``failed`` and ``lines(seconds)``. The exit
    code is 1 when any input was skipped.
    """
    from vqtool.data.inputs import Failure
    from vqtool.errors import VQError
    from vqtool.reporter import plural

    started = time.perf_counter()
    for item in stream:
        if isinstance(item, Failure):
            summary.failed += 1
            click.echo(f"Warning: {item.path}: {item.reason}; skipped", err=True)  # one unwrapped line per input
            continue
        summary.add(item)
        write(item)
    for line in summary.lines(time.perf_counter() - started):
        out.log(line)
    if summary.failed:
        raise VQError(f"{plural(summary.failed, 'input')} could not be read")
