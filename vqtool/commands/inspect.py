"""vqtool inspect: duplicates, leaks between splits, label errors, outliers and odd files of a dataset."""

from __future__ import annotations

from pathlib import Path

import click

from vqtool.commands import config_options, data_options, device_option, output_options, overwrite_option
from vqtool.commands.completion import complete_dataset
from vqtool.inspection.options import InspectOptions

SHOWN = 10  # rows of each finding on the terminal (--json and --report hold them all)


@click.command()
@click.argument("dataset", shell_complete=complete_dataset)
@config_options(InspectOptions)
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write DIR/index.html: one self-contained page with contact sheets of every finding.")
@click.option("--write-list", "list_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write a CSV (path,label,split) of the images that pass, for `vqtool train FILE`.")
@overwrite_option
@device_option
@data_options
@output_options
def inspect(dataset, model_name, weights, imgsz, near_threshold, label_check, task, labels_from, report_dir, list_file,
            overwrite, device, data, out):
    """Look at DATASET before training on it: unreadable and odd files, exact and near duplicates (within a
    class, across classes, across splits), label-error candidates, outliers and class balance.
    A YOLO data.yaml gets the file checks, its label files checked, duplicates and outliers (and, with
    --labels-from boxes, the checks of multi-label data). Multi-label data (--task multilabel): copies whose
    label sets differ, images per label and without one, and label-error candidates with a suggested label set.

    Nothing in the dataset's folder is written, moved or deleted.

    \b
    Examples:
      vqtool inspect ./pets --weights tf_efficientnet_lite0.in1k.safetensors
      vqtool inspect ./pets --json --quiet
      vqtool inspect ./pets --report pets-inspection --write-list clean.csv
      vqtool inspect fashion-mnist --data-dir ./data --model resnet18
      vqtool inspect tags.csv --task multilabel --write-list clean-tags.csv
    """
    from vqtool.inspection.job import inspect_dataset
    from vqtool.inspection.outputs import check_outputs, write_list, write_report

    check_outputs(dataset, report_dir, list_file, overwrite=overwrite)
    options = InspectOptions(model=model_name, weights=weights, imgsz=imgsz, near_threshold=near_threshold,
                             labels=label_check, device=device, task=task, labels_from=labels_from)
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
    from vqtool.inspection.outputs import given_text, per_class_text, suggested_text

    splits = document["splits"]
    multilabel = document["task"] == "multilabel"
    out.table(["split", "images", "unreadable", "median size", "mean", "std", "per label" if multilabel else "per class"],
              [[name, s["images"], s["unreadable"], _size(s["size"]), _values(s["mean"]), _values(s["std"]),
                per_class_text(s)] for name, s in splits.items()],
              title=f"{document['dataset']}: {document['images']} images")
    _findings(out, "unreadable files", ["image", "split", "reason"],
              [[f["image"], f["split"], f["reason"]] for f in document["unreadable"]])
    given = "labels" if multilabel else "class"
    _findings(out, "odd files", ["image", "split", given, "issues"],
              [[f["image"], f["split"], given_text(f), "; ".join(f["issues"])] for f in document["odd_files"]])
    _findings(out, "unusable label files", ["image", "split", "reason"],
              [[f["image"], f["split"], f["reason"]] for f in document["label_files"]])
    _findings(out, "exact duplicates", ["relation", "images"],
              [[g["relation"], _members(g)] for g in document["exact_duplicates"]])
    _findings(out, "near duplicates", ["relation", "similarity", "detail", "layout", "images"],
              [[g["relation"], g["similarity"], _or_dash(g["detail_similarity"]), _or_dash(g["layout_similarity"]),
                _members(g)] for g in document["near_duplicates"]])
    _label_issues(out, document["label_issues"], given_text, suggested_text)
    _findings(out, "outliers", ["image", "split", given, "similarity"],
              [[f["image"], f["split"], given_text(f), f["centre_similarity"]] for f in document["outliers"]])
    counts = ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in document["counts"].items())
    out.text(f"{counts}; {document['seconds']['total']} s")
    if not document["label_check"]["done"]:
        out.warn(f"no label check: {document['label_check']['reason']}")
    if document["balance"]["hint"]:
        out.warn(document["balance"]["hint"])


def _label_issues(out, found: list[dict], given_text, suggested_text) -> None:
    if found and "probabilities" in found[0]:  # multi-label: the label sets, and the probabilities of the changes
        _findings(out, "label-error candidates", ["image", "split", "given", "suggested", "probabilities"],
                  [[f["image"], f["split"], given_text(f), suggested_text(f),
                    " ".join(f"{label} {p}" for label, p in f["probabilities"].items())] for f in found])
        return
    _findings(out, "label-error candidates", ["image", "split", "given", "suggested", "p(given)"],
              [[f["image"], f["split"], f["class"], f["suggested"], f["given_probability"]] for f in found])


def _findings(out, title: str, columns: list[str], rows: list[list]) -> None:
    if not rows:
        return
    more = f" (first {SHOWN} of {len(rows)}; all in --json and --report)" if len(rows) > SHOWN else ""
    out.table(columns, rows[:SHOWN], title=f"{len(rows)} {title}{more}")


def _members(group: dict) -> str:
    from vqtool.inspection.outputs import given_text

    return "  ".join(f"{m['image']} ({m['split']}/{given_text(m)})" for m in group["images"])


def _or_dash(value: float | None) -> str:
    """A similarity, or "-" where the pair was not that search's candidate."""
    return "-" if value is None else f"{value:g}"


def _size(size: dict | None) -> str:
    return "-" if size is None else f"{size['width']['median']:g}x{size['height']['median']:g}"


def _values(values: list[float]) -> str:
    return "/".join(f"{v:.3f}" for v in values)
