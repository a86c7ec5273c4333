"""vqtool predict: classify images with a trained classifier, streamed one result per image."""

from __future__ import annotations

import click

from vqtool.classification.config import PredictOptions
from vqtool.commands import amp_option, device_option, output_options, threads_option, trust_pickle_option
from vqtool.commands.streaming import FORMATS
from vqtool.commands.types import FiniteFloat

DEFAULTS = PredictOptions()


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--weights", "-w", required=True,
              help="A vqtool run folder, model.safetensors or model.json, a model exported by vqtool export "
                   "(.onnx, .ts, an OpenVINO .openvino folder; fp32 or int8), or Ultralytics classification weights (yolo*-cls.pt).")
@click.option("--top-k", type=click.IntRange(1), default=DEFAULTS.top_k, show_default=True,
              help="Classes listed per image (at most the model's number of classes).")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="jsonl: one JSON object per image; csv: one row per image; table: for reading "
                   "(default: table on a terminal, else jsonl).")
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULTS.batch_size, show_default=True, help="Images per forward pass.")
@device_option
@amp_option
@threads_option
@click.option("--workers", type=click.IntRange(1), default=DEFAULTS.workers, help="Image-decoding threads.")
@click.option("--vid-stride", type=click.IntRange(1), default=DEFAULTS.vid_stride, show_default=True,
              help="Use every N-th video frame.")
@click.option("--tta", is_flag=True,
              help="Average the softmax over each image and its mirror image (refused for models whose training "
                   "data is never mirrored, such as digits).")
@click.option("--sort-into", type=click.Path(file_okay=False),
              help="Copy each image into SORT_INTO/<predicted class>/ (below --min-confidence: _uncertain/). "
                   "Originals are never moved or changed; a name already taken gets a numbered name.")
@click.option("--min-confidence", type=FiniteFloat(0, 1), default=DEFAULTS.min_confidence,
              help="With --sort-into: images whose top confidence is below this go to _uncertain/.")
@click.option("--threshold", type=FiniteFloat(0, 1), default=DEFAULTS.threshold,
              help="Multi-label models: list the labels whose probability is at least this, instead of each "
                   "label's own threshold (chosen on val when it trained).")
@click.option("--link", is_flag=True, help="With --sort-into: hard-link (else symlink) instead of copying.")
@click.option("--cam", "cam_dir", type=click.Path(file_okay=False),
              help="Write a Grad-CAM heatmap of the top class for each image here (PNG; torch checkpoints).")
@click.option("--cam-layer", metavar="NAME",
              help="The module Grad-CAM looks at (default: the last convolutional stage).")
@trust_pickle_option
@output_options
def predict(sources, weights, top_k, fmt, batch_size, device, amp, workers, vid_stride, tta, sort_into, min_confidence,
            threshold, link, cam_dir, cam_layer, out):
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
    from vqtool.errors import VQError
    from vqtool.tasks import predict as run_prediction

    fmt = choose_format(out, fmt)
    if not sort_into and (min_confidence is not None or link):
        raise VQError(f"{'--link' if link else '--min-confidence'} goes with --sort-into DIR", usage=True)
    if cam_layer and not cam_dir:
        raise VQError("--cam-layer goes with --cam DIR", usage=True)
    options = PredictOptions(top_k=top_k, batch_size=batch_size, device=device, tta=tta, vid_stride=vid_stride,
                             workers=workers, sort_into=sort_into, min_confidence=min_confidence, link=link,
                             cam_dir=cam_dir, cam_layer=cam_layer, amp=amp, threshold=threshold)
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
