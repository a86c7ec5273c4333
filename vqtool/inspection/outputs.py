"""What `inspect` writes where the user says: the list of images that pass, and the HTML report.

Neither is ever written inside the dataset's own folder.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from pathlib import Path

from PIL import Image

from vqtool.errors import VQError
from vqtool.inspection.job import Inspection
from vqtool.runs.folder import check_output
from vqtool.runs.atomic_files import atomic_write

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
THUMBNAIL = 128  # pixels
REPORT_ITEMS = 300  # of each finding on the page


def check_outputs(dataset: str, report_dir: str | None, list_file: str | None, *, overwrite: bool) -> None:
    """Refuse, before anything runs, an output inside the dataset's folder or one that exists (without
    ``overwrite``)."""
    root = _dataset_folder(dataset)
    for option, path in (("--report", report_dir), ("--write-list", list_file)):
        if path is None:
            continue
        if root is not None and _inside(Path(path), root):
            raise VQError(f"{option} {path} is inside the dataset's folder {root}; inspect never writes there "
                          f"(choose a path outside it)", usage=True)
        check_output(Path(path) / "index.html" if option == "--report" else Path(path), overwrite=overwrite,
                     option=option)


def _dataset_folder(dataset: str) -> Path | None:
    if os.path.isdir(dataset):
        return Path(os.path.realpath(dataset))
    if os.path.isfile(dataset):
        return Path(os.path.realpath(dataset)).parent
    return None


def _inside(path: Path, root: Path) -> bool:
    target = Path(os.path.realpath(path))
    return target == root or root in target.parents


# --- the list of images that pass ------------------------------------------------------------------


def passing(inspection: Inspection) -> tuple[list[int], dict[str, int]]:
    """The positions of the images that pass, and how many were left out for each reason.

    Left out: label-error candidates; every image of a duplicate group whose
    labels conflict (classes, or label sets, that differ); of other duplicate groups, all but one copy, keeping the
    one in the latest split (test before val before train), so that a
    held-out split stays as it was.
    """
    images, document = inspection.images, inspection.document
    index = {name: i for i, name in enumerate(images.names)}
    left_out: dict[int, str] = {}
    for finding in document["label_issues"]:
        left_out.setdefault(index[finding["image"]], "label issue")
    conflict = "with conflicting labels" if images.multilabel else "across classes"
    for kind in ("exact_duplicates", "near_duplicates"):
        for group in document[kind]:
            members = [index[m["image"]] for m in group["images"]]
            if group["across_classes"]:
                left_out.update({m: left_out.get(m, f"{kind[:-1].replace('_', ' ')} {conflict}") for m in members})
                continue
            kept = max(members, key=lambda m: (SPLIT_ORDER[images.splits[m]], -m))
            for member in members:
                if member != kept and member not in left_out:
                    left_out[member] = f"{kind[:-1].replace('_', ' ')} copy"
    reasons: dict[str, int] = {}
    for reason in left_out.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    return [i for i in range(len(images)) if i not in left_out], reasons


def write_list(inspection: Inspection, path: Path, *, overwrite: bool) -> dict:
    """``path``: a CSV (path,label,split) of the images that pass, which `vqtool train` reads; multi-label:
    (path,labels,split), the labels separated by ``|``, which `vqtool train --task multilabel` reads."""
    images = inspection.images
    if any(file is None for file in images.files):
        raise VQError(f"--write-list names image files, and {inspection.document['dataset']} is not a dataset of "
                      f"files", usage=True)
    kept, reasons = passing(inspection)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "labels" if images.multilabel else "label", "split"])
    for i in kept:
        writer.writerow([os.path.abspath(images.files[i]), given_text(images.describe(i), empty=""), images.splits[i]])
    check_output(path, overwrite=overwrite, option="--write-list")
    atomic_write(path, text.getvalue())
    return {"path": str(path), "images": len(kept), "left_out": reasons}


# --- the HTML report -----------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}h2{margin-top:2em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;font-size:90%;text-align:left}
.sheet{display:flex;flex-wrap:wrap;gap:1em}.item{border:1px solid #ccc;padding:.5em;border-radius:4px}
.item img{width:128px;height:128px;object-fit:contain;background:#eee;display:block}
.row{display:flex;gap:.5em}.cap{font-size:80%;max-width:264px;word-break:break-all}
.warn{color:#b00}
"""


def write_report(inspection: Inspection, folder: Path) -> Path:
    """``folder``/index.html: the findings as one page, the images embedded (nothing else to copy)."""
    document = inspection.document
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>vqtool inspect: "
             f"{_e(document['dataset'])}</title><style>{STYLE}</style></head><body>",
             f"<h1>vqtool inspect: {_e(document['dataset'])}</h1>",
             f"<p>{document['images']} images; model {_e(document['model'])} ({_e(document['weights'])}); "
             f"{', '.join(f'{n} {_e(k.replace(chr(95), chr(32)))}' for k, n in document['counts'].items())}</p>",
             _splits_table(document), _balance(document)]
    thumbs = _Thumbnails(inspection)
    parts.append(_sheet("Exact duplicates", document["exact_duplicates"], thumbs, _group_item))
    parts.append(_sheet("Near duplicates", document["near_duplicates"], thumbs, _group_item))
    parts.append(_sheet("Label-error candidates", document["label_issues"], thumbs, _label_item))
    parts.append(_sheet("Outliers", document["outliers"], thumbs, _outlier_item))
    parts.append(_sheet("Odd files", document["odd_files"], thumbs, _odd_item))
    if document["unreadable"]:
        rows = "".join(f"<tr><td>{_e(f['image'])}</td><td>{_e(f['split'])}</td><td>{_e(f['reason'])}</td></tr>"
                       for f in document["unreadable"])
        parts.append(f"<h2>Unreadable ({len(document['unreadable'])})</h2><table><tr><th>file</th><th>split</th>"
                     f"<th>reason</th></tr>{rows}</table>")
    parts.append("</body></html>")
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / "index.html"
    atomic_write(page, "\n".join(parts))
    return page


def given_text(finding: dict, empty: str = "(none)") -> str:
    """A finding's given label: its class, or its labels joined by ``|`` (``empty`` when it has none)."""
    if "class" in finding:
        return str(finding["class"])
    return "|".join(finding["labels"] or ()) or empty


def per_class_text(split: dict) -> str:
    """A split summary's images per class; multi-label: per label that has images, and without a label."""
    if "without_labels" not in split:
        return ", ".join(f"{c} {n}" for c, n in split["classes"].items())
    return ", ".join([*(f"{c} {n}" for c, n in split["classes"].items() if n), f"no label {split['without_labels']}"])


def suggested_text(finding: dict) -> str:
    suggested = finding["suggested"]
    return ("|".join(suggested) or "(none)") if isinstance(suggested, list) else suggested


def _e(value) -> str:
    return html.escape(str(value))


def _splits_table(document: dict) -> str:
    rows = "".join(f"<tr><td>{_e(name)}</td><td>{s['images']}</td><td>{s['unreadable']}</td>"
                   f"<td>{_e(per_class_text(s))}</td>"
                   f"<td>{_e(s['mean'])}</td><td>{_e(s['std'])}</td></tr>" for name, s in document["splits"].items())
    return (f"<h2>Splits</h2><table><tr><th>split</th><th>images</th><th>unreadable</th><th>per class</th>"
            f"<th>mean</th><th>std</th></tr>{rows}</table>")


def _balance(document: dict) -> str:
    hint = document["balance"]["hint"]
    return f"<p class='warn'>{_e(hint)}</p>" if hint else ""


class _Thumbnails:
    def __init__(self, inspection: Inspection):
        self.images = inspection.images
        self.index = {name: i for i, name in enumerate(self.images.names)}

    def __call__(self, name: str) -> str:
        pixels = self.images.pixels(self.index[name]).permute(1, 2, 0).numpy()
        image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=80)
        return f"<img alt='{_e(name)}' src='data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _sheet(title: str, findings: list[dict], thumbs, item) -> str:
    if not findings:
        return ""
    shown = findings[:REPORT_ITEMS]
    more = f" (the first {len(shown)})" if len(findings) > len(shown) else ""
    return (f"<h2>{title} ({len(findings)}){more}</h2><div class='sheet'>"
            + "".join(item(finding, thumbs) for finding in shown) + "</div>")


def _caption(member: dict) -> str:
    return f"{_e(member['image'])}<br>{_e(member['split'])} / <b>{_e(given_text(member))}</b>"


def _group_item(group: dict, thumbs) -> str:
    similarity = f", similarity {group['similarity']}" if "similarity" in group else ""
    cells = "".join(f"<div>{thumbs(m['image'])}<div class='cap'>{_caption(m)}</div></div>" for m in group["images"])
    return f"<div class='item'><div class='row'>{cells}</div><div class='cap'>{_e(group['relation'])}{similarity}</div></div>"


def _label_item(finding: dict, thumbs) -> str:
    if "probabilities" in finding:  # multi-label: each label given or suggested, with its probability
        odds = ", ".join(f"{label} {p}" for label, p in finding["probabilities"].items())
        change = f"given <b>{_e(given_text(finding))}</b> &rarr; suggested <b>{_e(suggested_text(finding))}</b> ({_e(odds)})"
    else:
        change = (f"given <b>{_e(finding['class'])}</b> ({finding['given_probability']}) &rarr; suggested "
                  f"<b>{_e(finding['suggested'])}</b> ({finding['suggested_probability']})")
    return f"<div class='item'>{thumbs(finding['image'])}<div class='cap'>{_caption(finding)}<br>{change}</div></div>"


def _outlier_item(finding: dict, thumbs) -> str:
    return (f"<div class='item'>{thumbs(finding['image'])}<div class='cap'>{_caption(finding)}<br>similarity to the "
            f"nearest class centre {finding['centre_similarity']}</div></div>")


def _odd_item(finding: dict, thumbs) -> str:
    return (f"<div class='item'>{thumbs(finding['image'])}<div class='cap'>{_caption(finding)}<br>"
            f"{_e('; '.join(finding['issues']))}</div></div>")
