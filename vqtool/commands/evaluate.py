"""vqtool eval: accuracy, top-k and per-class precision/recall/F1 of a checkpoint."""

from __future__ import annotations

import click

from vqtool.choices import SPLITS
from vqtool.commands import (amp_option, data_options, device_option, output_options, show_report, task_request,
                             threads_option, trust_pickle_option)
from vqtool.commands.completion import complete_dataset



def evaluation_options(command):
    """Options `eval` and `confusion` share."""
    command = click.option("--split", type=click.Choice(SPLITS), default=None,
                           help="Which split (default: test, else val, else everything).")(command)
    command = click.option("--batch-size", type=click.IntRange(1), default=None,
                           help="Images per batch (default: 256 on a GPU; on the CPU 64 of 224 px, more of smaller "
                                "ones: as fast per image, and less memory).")(command)
    command = device_option(command)
    command = amp_option(command)
    return threads_option(command)


@click.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.argument("dataset", required=False, shell_complete=complete_dataset)
@evaluation_options
@click.option("--predictions", "predictions_file", type=click.Path(dir_okay=False),
              help="Also write one row per image (path, true class, predicted class, confidence, top-5) to this "
                   ".csv or .jsonl file: where to find mislabelled images.")
@data_options
@trust_pickle_option
@output_options
def evaluate(checkpoint, dataset, data, out, **options):
    """Evaluate CHECKPOINT (a run folder or model file) on held-out data.

    DATASET defaults to the checkpoint's own test (or val) split. YOLO weights
    (.pt, .onnx or a detector run folder) are evaluated on a data.yaml: precision,
    recall, mAP50 and mAP50-95, overall and per class.

    \b
    Examples:
      vqtool eval runs/train-20261123-101500
      vqtool eval runs/pets ./pets-test --json
      vqtool eval best.pt data.yaml --json
    """
    from vqtool.tasks import run

    task, report = run(task_request("eval", out, target=checkpoint, dataset=dataset, data=data))
    show_report(out, task, report)
