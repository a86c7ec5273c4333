"""vqtool runs: the run folders under runs/ (or the folders given) as one table; runs compare: side by side."""

from __future__ import annotations

import click

from vqtool.commands import output_options, overwrite_option
from vqtool.commands.types import OutputPath


class ListByDefault(click.Group):
    """``vqtool runs [DIR...]`` lists; ``vqtool runs compare ...`` compares (a first word that is no subcommand
    goes to ``list``)."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group(cls=ListByDefault)
def runs():
    """List training run folders, or compare some (runs compare).

    \b
    Examples:
      vqtool runs
      vqtool runs runs/ nightly/ --sort val_top1 --reverse --filter status=finished
      vqtool runs --filter 'model=resnet*' --json
      vqtool runs compare runs/train-a runs/train-b --png compare.png
    """


@runs.command("list")
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False))
@click.option("--sort", "sort_key", metavar="KEY", help="Sort by a column (name, date, val_top1, seconds, ...).")
@click.option("--reverse", is_flag=True, help="Sort from the largest.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Keep runs whose KEY equals VALUE (* and ? match any text); repeatable.")
@output_options
def list_runs(folders, sort_key, reverse, filters, out):
    """One row per run folder found in FOLDERS (default runs/), below them too.

    Columns: name, command, task, model, dataset, epochs, best epoch, val top-1
    (val_map50_95 for detectors; val_map, the macro mAP over the labels that
    picks the best epoch, for multi-label classifiers), test top-1 (test_map),
    training seconds, date, status (finished, interrupted or running). --json
    adds val_loss and, for multi-label runs, val_label_accuracy (the share of
    right label decisions at 0.5). `vqtool runs` alone is `vqtool runs list`.

    \b
    Examples:
      vqtool runs list runs/ --sort val_top1 --reverse
      vqtool runs list --filter command=finetune --json
      vqtool runs list --filter task=multilabel --sort val_map --reverse
    """
    from vqtool.runs.summaries import COLUMNS, describe_all, find_runs, select

    rows = select(describe_all(find_runs(folders or ("runs",)), out), list(filters), sort_key, reverse)
    if out.json:
        out.emit(rows)
        return
    present = [column for column in COLUMNS if any(row[column] is not None for row in rows)] or list(COLUMNS)
    cells = {column: [_cell(row, column) for row in rows] for column in present}
    shown = fitting_columns(present, cells, out.width)
    out.table(shown, [[cells[column][i] for column in shown] for i in range(len(rows))], units=True)
    left_out = [column for column in present if column not in shown]
    out.log(f"{len(rows)} run{'s' if len(rows) != 1 else ''}" + (
        f"; left out for the width of {out.width} columns: {', '.join(left_out)} (--json has every column)"
        if left_out else ""))


# Which columns stay when the table must narrow, most wanted first; the name always stays, whole.
PRIORITY = ("name", "status", "val_top1", "val_map50_95", "val_map", "model", "epochs", "test_top1", "test_map",
            "task", "seconds", "dataset", "best_epoch", "date", "command")


def fitting_columns(columns: list[str], cells: dict[str, list], width: int) -> list[str]:
    """The columns, in their order, of the most wanted ones whose whole cells fit in ``width`` characters (each
    column takes its widest cell or header, a space either side and a separator)."""
    from vqtool.commands.output import format_field

    def needed(column):
        return max([len(column), *(len(format_field(column, cell)) for cell in cells[column])]) + 3

    kept, used = set(), -1
    for column in sorted(columns, key=lambda c: PRIORITY.index(c) if c in PRIORITY else len(PRIORITY)):
        if column == "name" or used + needed(column) <= width:
            kept.add(column)
            used += needed(column)
    return [column for column in columns if column in kept]


def _cell(row: dict, column: str):
    if column == "date" and row["date"]:
        return row["date"][:16].replace("T", " ")  # the minute is enough for a table; --json has it all
    return row[column]


@runs.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--png", type=OutputPath(), help="Also draw the runs' val curves overlaid into this PNG.")
@overwrite_option
@output_options
def compare_runs(run_dirs, png, overwrite, out):
    """The arguments that differ between RUN_DIRS, and their final metrics, side by side.

    \b
    Examples:
      vqtool runs compare runs/train-a runs/train-b
      vqtool runs compare runs/lr-* --png val-curves.png --json
    """
    from pathlib import Path

    from vqtool.errors import VQError

    if len(run_dirs) < 2:
        raise VQError("runs compare needs at least two run folders", usage=True)
    from vqtool.runs.summaries import compare, val_curves
    from vqtool.runs.folder import check_output

    comparison = compare(run_dirs)
    if png:
        from vqtool.plots import plot_val_curves

        check_output(Path(png), overwrite=overwrite, option="--png")
        plot_val_curves(Path(png), {name: val_curves(Path(run)) for name, run in zip(comparison["runs"],
                                                                                 comparison["paths"])},
                        replace=overwrite)
        comparison["png"] = png
    if out.json:
        out.emit(comparison)
        return
    names = comparison["runs"]
    differing = [[key, *values] for key, values in comparison["differing_args"].items()]
    out.table(["argument", *names], differing or [["(none differ)", *[""] * len(names)]], title="arguments")
    out.table(["metric", *names], [[key, *values] for key, values in comparison["metrics"].items()],
              title="final metrics")
