"""vqtool inspect: duplicates, leaks between splits, label errors, outliers and odd files of a dataset."""

from __future__ import annotations

from pathlib import Path

import click

from vqtool.commands import data_options, device_option, output_options, overwrite_option
from vqtool.commands.completion import complete_dataset, complete_model
from vqtool.commands.types import FiniteFloat
from vqtool.inspection.options import InspectOptions

DEFAULTS = InspectOptions()

SHOWN = 10  # rows of each finding on the terminal (--json and --report hold them all)


@click.command()
@click.argument("dataset", shell_complete=complete_dataset)
@click.option("--model", "model_name", default=DEFAULTS.model, show_default=True,
              shell_complete=complete_model, help="Backbone whose features are the embeddings.")
@click.option("--weights", metavar="SPEC",
              help="Its weights: DEFAULT (from the local cache), a timm tag or torchvision enum, or a local "
                   ".safetensors/.pth file (offline).")
@click.option("--imgsz", type=click.IntRange(8), default=DEFAULTS.imgsz, help="Image size for the backbone (default: its own).")
@click.option("--near-threshold", type=FiniteFloat(0, 1, min_open=True), default=DEFAULTS.near_threshold, show_default=True,
              help="Cosine similarity of two embeddings from which the images are near-copy candidates; a "
                   "candidate is reported when its small greyscale thumbnails' detail matches too (and the "
                   "thumbnails' own near neighbours whose layout matches are reported whatever this is).")
@click.option("--label-check/--no-label-check", default=DEFAULTS.labels, show_default=True,
              help="Look for label errors (k-fold linear head on the embeddings, cleanlab's confident learning).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write DIR/index.html: one self-contained page with contact sheets of every finding.")
@click.option("--write-list", "list_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write a CSV (path,label,split) of the images that pass, for `vqtool train FILE`.")
@overwrite_option
@device_option
@data_options
@output_options
def inspect(dataset, model_name, weights, imgsz, near_threshold, label_check, report_dir, list_file, overwrite,
            device, data, out):
    """Look at DATASET before training on it: unreadable and odd files, exact and near duplicates (within a
    class, across classes, across splits), label-error candidates, outliers and class balance.
    A YOLO data.yaml gets the file checks, its label files checked, duplicates and outliers.

    Nothing in the dataset's folder is written, moved or deleted.

    \b
    Examples:
      vqtool inspect ./pets --weights tf_efficientnet_lite0.in1k.safetensors
      vqtool inspect ./pets --json --quiet
      vqtool inspect ./pets --report pets-inspection --write-list clean.csv
      vqtool inspect fashion-mnist --data-dir ./data --model resnet18
    """
    from vqtool.inspection.job import inspect_dataset
    from vqtool.inspection.outputs import check_outputs, write_list, write_report

    check_outputs(dataset, report_dir, list_file, overwrite=overwrite)
    options = InspectOptions(model=model_name, weights=weights, imgsz=imgsz, near_threshold=near_threshold,
                             labels=label_check, device=device)
    inspection = inspect_dataset(dataset, data, options, reporter=out)
    document = inspection.document
    if report_dir:
        document["report"] = str(write_report(inspection, Path(report_dir)))
        out.log(f"report: {document['report']}")
    if list_file:
        document["list"] = write_list(inspection, Path(list_file), overwrite=overwrite)
        out.log(f"list: {document['list']['path']} ({document['list']['images']} of {document['images']} images)")
    if out.json:
        out.emit(document)
        return
    _print(out, document)


def _print(out, document: dict) -> None:
    splits = document["splits"]
    out.table(["split", "images", "unreadable", "median size", "mean", "std", "per class"],
              [[name, s["images"], s["unreadable"], _size(s["size"]), _values(s["mean"]), _values(s["std"]),
                ", ".join(f"{c} {n}" for c, n in s["classes"].items())] for name, s in splits.items()],
              title=f"{document['dataset']}: {document['images']} images")
    _findings(out, "unreadable files", ["image", "split", "reason"],
              [[f["image"], f["split"], f["reason"]] for f in document["unreadable"]])
    _findings(out, "odd files", ["image", "split", "class", "issues"],
              [[f["image"], f["split"], f["class"], "; ".join(f["issues"])] for f in document["odd_files"]])
    _findings(out, "unusable label files", ["image", "split", "reason"],
              [[f["image"], f["split"], f["reason"]] for f in document["label_files"]])
    _findings(out, "exact duplicates", ["relation", "images"],
              [[g["relation"], _members(g)] for g in document["exact_duplicates"]])
    _findings(out, "near duplicates", ["relation", "similarity", "detail", "layout", "images"],
              [[g["relation"], g["similarity"], _or_dash(g["detail_similarity"]), _or_dash(g["layout_similarity"]),
                _members(g)] for g in document["near_duplicates"]])
    _findings(out, "label-error candidates", ["image", "split", "given", "suggested", "p(given)"],
              [[f["image"], f["split"], f["class"], f["suggested"], f["given_probability"]]
               for f in document["label_issues"]])
    _findings(out, "outliers", ["image", "split", "class", "similarity"],
              [[f["image"], f["split"], f["class"], f["centre_similarity"]] for f in document["outliers"]])
    counts = ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in document["counts"].items())
    out.text(f"{counts}; {document['seconds']['total']} s")
    if not document["label_check"]["done"]:
        out.warn(f"no label check: {document['label_check']['reason']}")
    if document["balance"]["hint"]:
        out.warn(document["balance"]["hint"])


def _findings(out, title: str, columns: list[str], rows: list[list]) -> None:
    if not rows:
        return
    more = f" (first {SHOWN} of {len(rows)}; all in --json and --report)" if len(rows) > SHOWN else ""
    out.table(columns, rows[:SHOWN], title=f"{len(rows)} {title}{more}")


def _members(group: dict) -> str:
    return "  ".join(f"{m['image']} ({m['split']}/{m['class']})" for m in group["images"])


def _or_dash(value: float | None) -> str:
    """A similarity, or "-" where the pair was not that search's candidate."""
    return "-" if value is None else f"{value:g}"


def _size(size: dict | None) -> str:
    return "-" if size is None else f"{size['width']['median']:g}x{size['height']['median']:g}"


def _values(values: list[float]) -> str:
    return "/".join(f"{v:.3f}" for v in values)
