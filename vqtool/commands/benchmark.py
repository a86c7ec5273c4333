"""vqtool benchmark: a classifier's speed and accuracy in every runtime this machine has, side by side."""

from __future__ import annotations

import click

from vqtool.classification.config import BenchmarkOptions
from vqtool.commands import config_options, data_options, output_options, threads_option, trust_pickle_option
from vqtool.commands.completion import complete_dataset

DEFAULTS = BenchmarkOptions()
FORMAT_NAMES = DEFAULTS.formats  # every format, in the order they are measured


def comma_list(convert, allowed=None):
    """A click callback splitting "a,b" into a tuple, each item converted and checked."""

    def parse(ctx, param, value):
        try:
            items = tuple(convert(item.strip()) for item in value.split(",") if item.strip())
        except ValueError:
            raise click.BadParameter(f"{value!r}: a comma-separated list") from None
        wrong = [item for item in items if (allowed is not None and item not in allowed)
                 or (allowed is None and item < 1)]
        if not items or wrong:
            raise click.BadParameter(f"{', '.join(map(str, wrong)) or value!r}: choose from "
                                     f"{', '.join(allowed) if allowed else 'positive integers'}")
        return items

    return parse


@click.command()
@click.argument("target", metavar="RUN_OR_FILE")
@click.argument("dataset", required=False, shell_complete=complete_dataset)
@click.option("--formats", default=",".join(FORMAT_NAMES), show_default=True,
              callback=comma_list(str, FORMAT_NAMES), help="Which formats to measure (a run folder only).")
@click.option("--batch", "batches", default=",".join(map(str, DEFAULTS.batches)), show_default=True,
              callback=comma_list(int),
              help="Batch sizes: time per call (median, p90) and images/s at each.")
@config_options(BenchmarkOptions, "seconds", "max_drop", "calibrate", "calibration_images")
@threads_option
@data_options
@trust_pickle_option
@output_options
def benchmark(target, dataset, formats, batches, data, out, **options):
    """Measure RUN_OR_FILE in every available format on DATASET's images.

    For a run folder: torch eager, TorchScript, ONNX Runtime fp32 and int8,
    OpenVINO fp32, bf16 and int8 (exports built in a temporary folder); for an
    exported file: that file. Per format: load time, size, time per call
    (median, p90) and images/s at each --batch, accuracy, and top-1 agreement
    with the first format. DATASET defaults to the model's own held-out split.
    The fastest format within --max-drop is marked; formats whose runtime is
    missing are listed as skipped with the line that installs it.

    \b
    Examples:
      vqtool benchmark runs/finetune-effnet
      vqtool benchmark runs/finetune-effnet ./photos --formats torch,onnx,openvino-int8 --batch 1,32 --json
      vqtool benchmark runs/finetune-effnet/model.int8.openvino ./photos --threads 2
    """
    from vqtool.classification.export.benchmark import benchmark as run_benchmark
    from vqtool.errors import VQError
    from vqtool.tasks import is_classifier

    if not is_classifier(target):
        raise VQError(f"{target}: not a vqtool classifier or export (benchmark measures classifiers)", usage=True)
    options = BenchmarkOptions(formats=formats, batches=batches, **options)
    result = run_benchmark(target, dataset, options, data, out)
    if out.json:
        out.emit(result)
        return
    show(out, result)


def show(out, result: dict) -> None:
    """One table: time per call (median, p90) at the first batch size, images/s at each, accuracy, agreement."""
    first, batches = result["batches"][0], result["batches"]
    columns = ["format", "load s", "MB", f"b{first} ms", f"b{first} p90"] + [f"b{b} img/s" for b in batches] + \
        ["accuracy", "agree", ""]
    rows = [[row["format"], f"{row['load_seconds']:.2f}", "-" if row["size_mb"] is None else f"{row['size_mb']:.2f}",
             f"{row[f'batch{first}_ms_median']:.2f}", f"{row[f'batch{first}_ms_p90']:.2f}",
             *(f"{row[f'batch{b}_images_per_second']:,.1f}" for b in batches),
             f"{row['accuracy']:.4f}", f"{row['agreement']:.4f}", "fastest" if row["fastest"] else ""]
            for row in result["formats"]]
    out.table(columns, rows, title=f"{result['target']} on {result['dataset']}\n{result['cpu']['summary']}")
    for skipped in result["skipped"]:
        out.text(f"skipped {skipped['format']}: {skipped['reason']}")
