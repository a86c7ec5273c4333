"""vqtool detect: objects in images and videos with an Ultralytics YOLO detector, streamed as they are found."""

from __future__ import annotations

import click

from vqtool.commands import device_option, output_options, trust_pickle_option
from vqtool.commands.streaming import FORMATS
from vqtool.commands.types import FiniteFloat, OutputPath
from vqtool.detection.predict import DetectOptions

DEFAULTS = DetectOptions()

CSV_COLUMNS = ["path", "frame", "width", "height", "class_id", "class_name", "confidence",
               "x1", "y1", "x2", "y2", "cx", "cy", "w", "h"]


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--weights", "-w", required=True,
              help="Ultralytics .pt checkpoint, exported .onnx, detector run folder, or an official name "
                   "(yolov8n.pt) looked up in $VQTOOL_WEIGHTS_DIR (default ~/.cache/vqtool/weights).")
@click.option("--conf", type=FiniteFloat(0, 1), default=DEFAULTS.conf, show_default=True, help="Minimum confidence.")
@click.option("--iou", type=FiniteFloat(0, 1), default=DEFAULTS.iou, show_default=True,
              help="IoU threshold of non-maximum suppression.")
@click.option("--imgsz", type=click.IntRange(32), default=DEFAULTS.imgsz, show_default=True, help="Inference size in pixels.")
@click.option("--classes", metavar="NAME,...", help="Keep only these classes (names, or ids).")
@device_option
@click.option("--max-det", type=click.IntRange(1), default=DEFAULTS.max_det, show_default=True, help="Most detections per image.")
@click.option("--batch", type=click.IntRange(1), default=DEFAULTS.batch, show_default=True, help="Images per forward pass.")
@click.option("--vid-stride", type=click.IntRange(1), default=DEFAULTS.vid_stride, show_default=True,
              help="Use every N-th video frame.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="jsonl: one JSON object per image; csv: one row per detection; table: for reading "
                   "(default: table on a terminal, else jsonl).")
@click.option("--save-dir", type=OutputPath(folder=True),
              help="Write annotated images here. Refused when it is, contains or lies inside a source folder "
                   "(the copies would replace the inputs or be read as inputs next time).")
@click.option("--save-txt", is_flag=True, help="Also write YOLO label files to SAVE_DIR/labels.")
@click.option("--overwrite", is_flag=True,
              help="Replace files already in SAVE_DIR (without it an existing file is an error; an input is never "
                   "replaced).")
@trust_pickle_option
@output_options
def detect(sources, weights, conf, iou, imgsz, classes, device, max_det, batch, vid_stride, fmt, save_dir,
           save_txt, overwrite, out):
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
    from vqtool.errors import VQError
    from vqtool.tasks import require_detector

    require_detector(weights)
    fmt = choose_format(out, fmt)
    if save_txt and not save_dir:
        raise VQError("--save-txt needs --save-dir DIR (labels go to DIR/labels)", usage=True)
    options = DetectOptions(conf=conf, iou=iou, imgsz=imgsz, device=device, max_det=max_det, batch=batch,
                            vid_stride=vid_stride, save_dir=save_dir, save_txt=save_txt, overwrite=overwrite,
                            classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None)
    print_stream(run_detection(sources, weights, options), WRITERS[fmt](out), DetectSummary(save_dir=save_dir), out)


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
