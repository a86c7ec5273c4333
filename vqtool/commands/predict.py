"""vqtool predict: classify images with a trained classifier, streamed one result per image."""

from __future__ import annotations

import click

from vqtool.classification.config import PredictOptions
from vqtool.commands import (amp_option, config_options, device_option, output_options, threads_option,
                             trust_pickle_option)
from vqtool.commands.streaming import FORMATS


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--weights", "-w", required=True,
              help="A vqtool run folder, model.safetensors or model.json, a model exported by vqtool export "
                   "(.onnx, .ts, an OpenVINO .openvino folder; fp32 or int8), or Ultralytics classification weights (yolo*-cls.pt).")
@config_options(PredictOptions, "top_k")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="jsonl: one JSON object per image; csv: one row per image; table: for reading "
                   "(default: table on a terminal, else jsonl).")
@config_options(PredictOptions, "batch_size")
@device_option
@amp_option
@threads_option
@config_options(PredictOptions, "workers", "vid_stride", "tta", "sort_into", "min_confidence", "threshold", "link",
                "cam_dir", "cam_layer")
@trust_pickle_option
@output_options
def predict(sources, weights, fmt, out, **options):
    """Classify SOURCES with a trained classifier; one result per image, as soon as its batch is done.

    A multi-label model lists each image's labels at or above their thresholds
    (the ones chosen on val, or --threshold), with every label's probability.

    SOURCES are image files, folders (searched recursively for images), globs,
    videos, or - to read paths from stdin, one per line. Images are prepared
    exactly as `vqtool eval` prepares them. Unreadable inputs are reported on
    stderr and skipped; the exit code is 1 if any were. A summary (count per
    class, mean confidence, time per image) goes to stderr.

    \b
    Examples:
      vqtool predict photo.jpg -w runs/pets
      vqtool predict inbox/ -w runs/pets | jq -r 'select(.confidence > 0.9) | [.path, .class] | @tsv'
      vqtool predict inbox/ -w runs/pets --sort-into sorted --min-confidence 0.8
      find /data -name '*.jpg' | vqtool predict - -w model.onnx --format csv > labels.csv
      vqtool predict shots/ -w runs/pets --cam heatmaps/
    """
    from vqtool.commands.streaming import choose_format, print_stream
    from vqtool.tasks import predict as run_prediction

    fmt = choose_format(out, fmt)
    options = PredictOptions(**options)
    options.check()
    stream, task, classes = run_prediction(sources, weights, options)
    output = task.predict_output(classes, options)
    print_stream(stream, WRITERS[fmt](out, output), output["summary"], out)


def jsonl_writer(out, output):
    return out.emit


def csv_writer(out, output):
    from vqtool.classification.inference.records import csv_line

    out.text(csv_line(output["csv"]))
    return lambda record: out.text(csv_line(output["csv_values"](record)))


def table_writer(out, output):
    out.text(output["table_header"])
    return lambda record: out.text(output["table_row"](record))


WRITERS = {"jsonl": jsonl_writer, "csv": csv_writer, "table": table_writer}
