"""vqtool confusion: confusion matrix, most-confused pairs and misclassified examples."""

from __future__ import annotations

import click

from vqtool.commands import (data_options, output_options, overwrite_option, show_report, task_request,
                             trust_pickle_option)
from vqtool.commands.completion import complete_dataset
from vqtool.commands.evaluate import evaluation_options
from vqtool.commands.types import OutputPath


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("dataset", required=False, shell_complete=complete_dataset)
@click.option("--normalize", is_flag=True, help="Rows as fractions of each true class.")
@click.option("--top", type=click.IntRange(1), default=5, show_default=True, help="How many confused pairs.")
@click.option("--png", type=OutputPath(), help="Save the matrix as a heatmap PNG.")
@click.option("--examples", type=OutputPath(), help="Save a grid of misclassified images (PNG).")
@overwrite_option
@evaluation_options
@data_options
@trust_pickle_option
@output_options
def confusion(checkpoint, dataset, png, examples, overwrite, data, out, **options):
    """Confusion matrix of CHECKPOINT on held-out data, and the most-confused class pairs.

    \b
    Examples:
      vqtool confusion runs/fmnist --png confusion.png --examples mistakes.png
      vqtool confusion runs/fmnist --normalize --json
      vqtool confusion best.pt data.yaml --png confusion.png   # a detector: with a background class
    """
    from pathlib import Path

    from vqtool.runs.folder import check_output
    from vqtool.tasks import run

    for option, path in (("--png", png), ("--examples", examples)):
        if path:  # before anything is evaluated: a refused output costs nothing
            check_output(Path(path), overwrite=overwrite, option=option)
    task, report = run(task_request("confusion", out, target=checkpoint, dataset=dataset, data=data))
    show_report(out, task, report)
