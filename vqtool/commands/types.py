"""Option types that refuse what would fail later: NaN and infinite numbers, outputs that cannot be written.

They run while Click parses the command line, before any command imports torch,
so a bad value is a usage error (exit 2) in a moment rather than after a model load.
"""

from __future__ import annotations

import math

import click

from vqtool.runs.folder import output_problem


class FiniteFloat(click.FloatRange):
    """A float, optionally in a range, that is a number: ``nan`` passes every range check, ``inf`` most."""

    name = "float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


class OutputPath(click.Path):
    """A file (or, with ``folder``, a folder; with ``folder=None`` either) vqtool will write: refused when it
    cannot be written.

    ``empty``: an existing folder must hold nothing (run folders are never reused).
    """

    def __init__(self, *, folder: bool | None = False, empty: bool = False):
        super().__init__(file_okay=folder is not True, dir_okay=folder is not False)
        self.folder, self.empty = folder, empty

    def convert(self, value, param, ctx):
        problem = output_problem(value, folder=self.folder, empty=self.empty)
        if problem:
            self.fail(f"{value!r}: {problem}", param, ctx)
        return super().convert(value, param, ctx)
