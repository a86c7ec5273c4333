"""vqtool confusion: confusion matrix, most-confused pairs and misclassified examples."""

from __future__ import annotations

import click

from vqtool.commands import data_options, output_options, overwrite_option, trust_pickle_option, typed_options
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
def confusion(checkpoint, dataset, normalize, top, png, examples, overwrite, split, batch_size, device, amp, data, out):
    """Confusion matrix of CHECKPOINT on held-out data, and the most-confused class pairs.

    \b
    Examples:
      vqtool confusion runs/fmnist --png confusion.png --examples mistakes.png
      vqtool confusion runs/fmnist --normalize --json
      vqtool confusion best.pt data.yaml --png confusion.png   # a detector: with a background class
    """
    from pathlib import Path

    from vqtool.classification.checkpoint_files import check_model_path
    from vqtool.runs.folder import check_output
    from vqtool.tasks import DETECTION, task_of

    for option, path in (("--png", png), ("--examples", examples)):
        if path:  # before anything is evaluated: a refused output costs nothing
            check_output(Path(path), overwrite=overwrite, option=option)

    if task_of(checkpoint, dataset) == DETECTION:  # YOLO weights or a data.yaml
        from vqtool.detection.evaluate import detection_confusion
        from vqtool.errors import VQError

        if examples:
            raise VQError("--examples is for classifiers; a detector's matrix has no single image per cell",
                          usage=True)
        report = detection_confusion(checkpoint, dataset, top=top, normalize=normalize, split=split, device=device,
                                     batch_size=typed_options().get("batch_size"), reporter=out)
    else:
        check_model_path(checkpoint)  # before the evaluation imports torch
        from vqtool.classification.confusion import confusion_report
        from vqtool.classification.evaluate import evaluate

        evaluation = evaluate(checkpoint, dataset, data, split=split, device=device, batch_size=batch_size,
                              reporter=out, amp=amp)
        report = confusion_report(evaluation, top=top, normalize=normalize)
    from vqtool.classification.confusion import plot_confusion, plot_misclassified

    if png:
        plot_confusion(report, Path(png), replace=overwrite)
        out.log(f"wrote {png}")
    if examples:
        shown = plot_misclassified(evaluation, Path(examples), replace=overwrite)
        out.log(f"wrote {examples} ({shown} misclassified images)" if shown else
                f"wrote {examples} (no misclassified images: a figure saying so)")
    if out.json:
        out.emit(report)
        return
    classes = report["classes"]
    out.table(["true \\ predicted", *classes], [[name, *row] for name, row in zip(classes, report["matrix"])],
              title=f"{report['dataset']} ({report['split']}, n={report['n']})")
    out.text("most confused (true -> predicted: count):")
    for pair in report["pairs"]:
        out.text(f"  {pair['true']} -> {pair['predicted']}: {pair['count']}")
