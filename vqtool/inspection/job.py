"""The inspection of one dataset: every check, one document with stable keys."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from vqtool.data import DataOptions, Dataset, Split, load_dataset
from vqtool.data.digests import row_digests
from vqtool.data.images import UnreadableImage, read_image
from vqtool.data.pipeline import Preprocess, decode_split, pixel_stats
from vqtool.data.store import remembered
from vqtool.inspection import duplicates, labels as label_checks
from vqtool.inspection.embeddings import embed, load_backbone
from vqtool.inspection.files import Header, read_header, size_summary
from vqtool.inspection.options import InspectOptions
from vqtool.reporter import Reporter, plural

SPLITS = ("train", "val", "test")
YOLO_CLASS = "images"  # a detection dataset's images, inspected as one class


@dataclass
class Images:
    """Every inspected image, the splits one after another: its name, split, label and where its pixels are."""

    classes: list[str]
    parts: dict[str, Split]
    names: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    files: list[str | None] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def pooled(cls, classes: list[str], parts: dict[str, Split]) -> "Images":
        pool = cls(classes, parts)
        for name, split in parts.items():
            files = split.files or [None] * len(split)
            pool.names += [path or f"{name}[{i}]" for i, path in enumerate(files)]
            pool.splits += [name] * len(split)
            pool.files += files
        pool.labels = np.concatenate([split.labels.numpy() for split in parts.values()]).astype(np.int64)
        return pool

    def __len__(self) -> int:
        return len(self.names)

    def describe(self, i: int) -> dict:
        return {"image": self.names[i], "split": self.splits[i], "class": self.classes[int(self.labels[i])]}

    def pixels(self, i: int) -> torch.Tensor:
        """Image ``i`` as stored (uint8 C×S×S)."""
        for name, split in self.parts.items():
            if i < len(split):
                return split.pixels[torch.tensor([i])][0]
            i -= len(split)
        raise IndexError(i)


@dataclass
class Inspection:
    document: dict
    images: Images
    probabilities: np.ndarray | None = None  # out-of-fold, N × classes with images (None without a label check)


def inspect_dataset(spec: str, data: DataOptions, options: InspectOptions, reporter: Reporter) -> Inspection:
    """Inspect ``spec`` (any dataset vqtool reads); the findings document and the images it names."""
    options.check()
    timings, started = {}, time.perf_counter()
    dataset, label_files = _load(spec, data if data.val_split is not None else replace(data, val_split=0.0))
    backbone = load_backbone(options.model, options.weights, options.imgsz, options.device)
    listed = {name: split for name in SPLITS if (split := getattr(dataset, name)) is not None}
    decoded = {name: _decoded(split, name, dataset, backbone.preprocess, data, reporter)
               for name, split in listed.items()}
    images = Images.pooled(dataset.classes, decoded)
    timings["load_and_decode"] = _lap(started)
    document = {"dataset": dataset.name, "spec": spec, "classes": dataset.classes, "model": options.model,
                "weights": backbone.source, "image_size": backbone.preprocess.size}
    headers = _headers(decoded, reporter)
    document["splits"] = _split_summaries(listed, decoded, headers, dataset.classes)
    document["balance"] = label_checks.imbalance(Counter({c: 0 for c in dataset.classes}) +
                                                 Counter(dataset.classes[int(k)] for k in images.labels))
    document["unreadable"] = _unreadable(listed, decoded, dataset.classes)
    document["odd_files"] = _odd_files(images, headers)
    document["label_files"] = label_files
    exact = duplicates.exact_groups([d for split in decoded.values() for d in row_digests(split.pixels)], images.files)
    document["exact_duplicates"] = [_group(images, members) for members in exact]
    timings["files_and_exact_duplicates"] = _lap(started, timings)
    embeddings = embed(backbone, decoded, dataset, reporter, store=data.cache_store)
    timings["embeddings"] = _lap(started, timings)
    document["near_duplicates"] = _near(images, embeddings, exact, options)
    timings["near_duplicates"] = _lap(started, timings)
    document["label_issues"], document["label_check"], probabilities = _label_issues(
        images, embeddings, options, data.seed, detection=dataset.spec.get("detection", False), reporter=reporter,
        store=data.cache_store, name=dataset.name)
    document["outliers"] = _outliers(images, embeddings)
    timings["labels_and_outliers"] = _lap(started, timings)
    document["thresholds"] = {"near_similarity": options.near_threshold, "neighbours": options.neighbours,
                              "outlier_z": label_checks.OUTLIER_Z, "folds": label_checks.FOLDS}
    document["counts"] = {key: len(document[key]) for key in
                          ("unreadable", "odd_files", "label_files", "exact_duplicates", "near_duplicates",
                           "label_issues", "outliers")}
    document["images"] = len(images)
    document["seconds"] = {**timings, "total": round(time.perf_counter() - started, 2)}
    reporter.log(f"inspected {plural(len(images), 'image')} of {dataset.name} in {document['seconds']['total']} s")
    return Inspection(document, images, probabilities)


def _load(spec: str, data: DataOptions) -> tuple[Dataset, list[dict]]:
    """The dataset, and the problems of its label files (a YOLO data.yaml's; its images are inspected as one class,
    for the file checks, duplicates and outliers)."""
    from vqtool.detection.data import is_yolo_yaml

    if not is_yolo_yaml(spec):
        return load_dataset(spec, data), []
    from vqtool.detection.data import check_labels, load_yolo, split_images

    yolo = load_yolo(spec)
    splits = {}
    for name, sources in yolo.splits.items():
        files = sorted(split_images(sources))
        splits[name] = Split(labels=torch.zeros(len(files), dtype=torch.long), files=files)
    problems = [{"image": image, "split": name, "reason": reason}
                for name in yolo.splits for image, reason in check_labels(yolo, name).invalid.items()]
    return Dataset(name=yolo.name, classes=[YOLO_CLASS], channels=3, **splits, spec={"path": str(yolo.yaml), "detection": True}), problems


def _lap(started: float, timings: dict | None = None) -> float:
    return round(time.perf_counter() - started - sum((timings or {}).values()), 2)


def _decoded(split: Split, name: str, dataset: Dataset, preprocess: Preprocess, data: DataOptions,
             reporter: Reporter) -> Split:
    return decode_split(split, preprocess, strict=data.strict, reporter=reporter, workers=data.workers, name=name,
                        classes=dataset.classes, store=data.cache_store)


def _headers(decoded: dict[str, Split], reporter: Reporter) -> dict[str, list[Header | None]]:
    """Each file's header (kept beside the split's store entry, so read once)."""
    found = {}
    for name, split in decoded.items():
        if split.files is None:
            continue
        with reporter.progress(f"reading the {name} headers", None):
            rows = remembered(split.pixels, "headers", lambda _: [_header_row(path) for path in split.files])
        found[name] = [Header(*row) if row else None for row in rows]
    return found


def _header_row(path: str) -> list | None:
    header = read_header(path)
    return None if header is None else [header.mode, header.width, header.height, header.format]


def _split_summaries(listed, decoded, headers, classes) -> dict:
    summaries = {}
    for name, split in decoded.items():
        mean, std = remembered(split.pixels, "stats", pixel_stats)
        counts = np.bincount(split.labels.numpy(), minlength=len(classes))
        summaries[name] = {"images": len(split), "listed": len(listed[name]) + len(listed[name].skipped),
                           "unreadable": len(listed[name]) - len(split) + len(listed[name].skipped),
                           "classes": {c: int(n) for c, n in zip(classes, counts)},
                           "size": size_summary([h for h in headers.get(name, ()) if h is not None]),
                           "mean": list(mean), "std": list(std)}
    return summaries


def _unreadable(listed: dict[str, Split], decoded: dict[str, Split], classes: list[str]) -> list[dict]:
    """The files (and folders, and list rows) that were listed but not decoded, with why."""
    found = []
    for name, split in listed.items():
        if split.files is None:
            continue
        kept = set(decoded[name].files)
        for path, label in zip(split.files, split.labels.tolist()):
            if path not in kept:
                found.append({"image": path, "split": name, "class": classes[label], "reason": _why(path)})
        for path, reason in {**split.skipped, **split.rejected}.items():
            found.append({"image": path, "split": name, "class": None, "reason": reason})
    return found


def _why(path: str) -> str:
    try:
        read_image(path, channels=3)
    except UnreadableImage as error:
        return str(error)
    return "unreadable when decoded"


def _odd_files(images: Images, headers: dict[str, list[Header | None]]) -> list[dict]:
    """Files unusual among the dataset's own: another mode, a small image among larger ones, an extreme aspect."""
    every = [h for found in headers.values() for h in found if h is not None]
    if not every:
        return []
    usual_mode = Counter(h.mode for h in every).most_common(1)[0][0]
    usual_side = float(np.median([min(h.width, h.height) for h in every]))
    found, offset = [], 0
    for name, split in images.parts.items():
        for i, header in enumerate(headers.get(name, ())):
            if header is not None and (issues := header.oddities(usual_mode, usual_side)):
                found.append({**images.describe(offset + i), "issues": issues})
        offset += len(split)
    return found


def _group(images: Images, members: list[int], similarity: float | None = None) -> dict:
    classes = {int(images.labels[m]) for m in members}
    splits = {images.splits[m] for m in members}
    group = {"images": [images.describe(m) for m in members], "across_classes": len(classes) > 1,
             "across_splits": len(splits) > 1, "relation": duplicates.relation(len(classes) > 1, len(splits) > 1)}
    if similarity is not None:
        group["similarity"] = similarity
    return group


def _near(images: Images, embeddings: torch.Tensor, exact: list[list[int]], options: InspectOptions) -> list[dict]:
    same = {m: g for g, members in enumerate(exact) for m in members}
    pairs = duplicates.near_pairs(embeddings, options.near_threshold, options.neighbours)
    kept = [(i, j, s) for i, j, s in pairs if not (i in same and same.get(j) == same[i])]
    kept.sort(key=lambda pair: -pair[2])
    return [_group(images, [i, j], similarity) for i, j, similarity in kept]


def _label_issues(images: Images, embeddings: torch.Tensor, options: InspectOptions, seed: int, detection: bool,
                  reporter: Reporter, store: bool, name: str):
    """The label-error candidates (most likely first), how they were looked for (or why not), and the
    out-of-fold probabilities."""
    present, labels = np.unique(images.labels, return_inverse=True)
    counts = np.bincount(labels)
    if not options.labels:
        return [], {"done": False, "reason": "--no-label-check"}, None
    if detection:
        return [], {"done": False, "reason": "a detection dataset (its images hold boxes, not one label)"}, None
    if len(present) < 2:
        return [], {"done": False, "reason": "fewer than two classes have images"}, None
    if counts.min() < 2:
        return [], {"done": False, "reason": f"class {images.classes[present[counts.argmin()]]} has a single image"}, None
    features = embeddings.numpy()
    probabilities = label_checks.stored_out_of_fold_probabilities(features, labels, seed, reporter, store, name)
    found = []
    issues, proposed = label_checks.label_issues(labels, probabilities)
    for rank, i in enumerate(issues.tolist(), start=1):
        suggested = int(probabilities[i].argmax())
        found.append({**images.describe(i), "suggested": images.classes[present[suggested]], "rank": rank,
                      "given_probability": round(float(probabilities[i, labels[i]]), 4),
                      "suggested_probability": round(float(probabilities[i, suggested]), 4)})
    if proposed > len(found):
        reporter.log(f"label check: {len(found)} of cleanlab's {proposed} candidates kept; the head finds the "
                     f"others' given label at least as likely as chance (its own confusions, not wrong labels)")
    accuracy = float((probabilities.argmax(1) == labels).mean())
    return found, {"done": True, "folds": min(label_checks.FOLDS, int(counts.min())),
                   "out_of_fold_accuracy": round(accuracy, 4), "cleanlab_candidates": proposed}, probabilities


def _outliers(images: Images, embeddings: torch.Tensor) -> list[dict]:
    similarity = label_checks.centre_similarity(embeddings.numpy(), images.labels)
    return [{**images.describe(i), "centre_similarity": round(float(similarity[i]), 4)}
            for i in label_checks.outliers(similarity).tolist()]

