"""vqtool detect: objects in images and videos with an Ultralytics YOLO detector, streamed as they are found."""

from __future__ import annotations

import click

from vqtool.commands import config_options, device_option, output_options, trust_pickle_option
from vqtool.commands.streaming import FORMATS
from vqtool.detection.predict import DetectOptions

CSV_COLUMNS = ["path", "frame", "width", "height", "class_id", "class_name", "confidence",
               "x1", "y1", "x2", "y2", "cx", "cy", "w", "h"]


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--weights", "-w", required=True,
              help="Ultralytics .pt checkpoint, exported .onnx, detector run folder, or an official name "
                   "(yolov8n.pt) looked up in $VQTOOL_WEIGHTS_DIR (default ~/.cache/vqtool/weights).")
@config_options(DetectOptions, "conf", "iou", "imgsz")
@click.option("--classes", metavar="NAME,...", help="Keep only these classes (names, or ids).")
@device_option
@config_options(DetectOptions, "max_det", "batch", "vid_stride")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="jsonl: one JSON object per image; csv: one row per detection; table: for reading "
                   "(default: table on a terminal, else jsonl).")
@config_options(DetectOptions, "save_dir", "save_txt", "overwrite")
@trust_pickle_option
@output_options
def detect(sources, weights, classes, fmt, out, **options):
    """Detect objects in SOURCES with a YOLO detector; one result per image, as soon as it is done.

    SOURCES are image files, folders (searched recursively for images), globs,
    videos, or - to read paths from stdin, one per line. Unreadable inputs are
    reported on stderr and skipped; the exit code is 1 if any were. --save-txt
    writes a YOLO label file per image: a labels/ folder beside an images/
    folder is a dataset vqtool and Ultralytics read.

    \b
    Examples:
      vqtool detect images/ --weights yolov8n.pt
      vqtool detect 'shots/**/*.jpg' -w best.pt --conf 0.5 --classes person,car --format csv > boxes.csv
      find /data -name '*.png' | vqtool detect - -w runs/train-20261123-101500 --save-dir annotated --save-txt
      vqtool detect clip.mp4 -w model.onnx --vid-stride 5
    """
    from vqtool.commands.streaming import choose_format, print_stream
    from vqtool.detection.predict import DetectSummary, detect as run_detection
    from vqtool.tasks import require_detector

    require_detector(weights)
    fmt = choose_format(out, fmt)
    options = DetectOptions(**options,
                            classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None)
    options.check()
    print_stream(run_detection(sources, weights, options), WRITERS[fmt](out), DetectSummary(save_dir=options.save_dir),
                 out)


def jsonl_writer(out):
    return out.emit


def csv_writer(out):
    import csv
    import io

    out.text(",".join(CSV_COLUMNS))

    def write(record):
        buffer = io.StringIO()
        rows = csv.writer(buffer, lineterminator="\n")
        for d in record["detections"]:
            rows.writerow([record["path"], record.get("frame", ""), record["width"], record["height"],
                           d["class_id"], d["class_name"], d["confidence"], *d["xyxy"], *d["xywhn"]])
        if buffer.tell():
            out.text(buffer.getvalue().rstrip("\n"))

    return write


def table_writer(out):
    out.text(f"{'class':<16} {'conf':>6} {'x1':>7} {'y1':>7} {'x2':>7} {'y2':>7}  image")

    def write(record):
        where = record["path"] + (f" #{record['frame']}" if "frame" in record else "")
        if not record["detections"]:
            out.text(f"{'-':<16} {'':>6} {'':>7} {'':>7} {'':>7} {'':>7}  {where}")
        for d in record["detections"]:
            x1, y1, x2, y2 = d["xyxy"]
            out.text(f"{d['class_name']:<16} {d['confidence']:>6.3f} {x1:>7.1f} {y1:>7.1f} {x2:>7.1f} {y2:>7.1f}"
                     f"  {where}")

    return write


WRITERS = {"jsonl": jsonl_writer, "csv": csv_writer, "table": table_writer}
