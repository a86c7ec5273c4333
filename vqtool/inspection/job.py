"""The inspection of one dataset: every check, one document with stable keys."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch

from vqtool.data import DataOptions, Dataset, Split, load_dataset
from vqtool.data.digests import row_digests
from vqtool.data.images import UnreadableImage, read_image
from vqtool.data.pipeline import Preprocess, decode_split, pixel_stats
from vqtool.data.store import remembered
from vqtool.inspection import duplicates, labels as label_checks, thumbnails
from vqtool.inspection.embeddings import embed, load_backbone
from vqtool.inspection.files import Header, read_header, size_summary
from vqtool.inspection.options import InspectOptions
from vqtool.reporter import Reporter, plural

SPLITS = ("train", "val", "test")
YOLO_CLASS = "images"  # a detection dataset's images, inspected as one class


@dataclass
class Images:
    """Every inspected image, the splits one after another: its name, split, label and where its pixels are.

    ``labels`` are class indices (N), or for multi-label data an N × L 0/1 matrix: each image's label set."""

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

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    def describe(self, i: int) -> dict:
        return {"image": self.names[i], "split": self.splits[i], **given(self.classes, self.labels[i])}

    def label_key(self, i: int):
        """What two copies must share for their labels to agree: the class, or the label set."""
        return tuple(np.flatnonzero(self.labels[i])) if self.multilabel else int(self.labels[i])

    def counts(self) -> dict[str, int]:
        """Images per class (those with images), or per label (every label) for multi-label data."""
        if self.multilabel:
            return dict(zip(self.classes, self.labels.sum(axis=0).tolist()))
        return dict(Counter({c: 0 for c in self.classes}) + Counter(self.classes[int(k)] for k in self.labels))

    def pixels(self, i: int) -> torch.Tensor:
        """Image ``i`` as stored (uint8 C×S×S)."""
        for name, split in self.parts.items():
            if i < len(split):
                return split.pixels[torch.tensor([i])][0]
            i -= len(split)
        raise IndexError(i)


def given(classes: list[str], label) -> dict:
    """An image's given label as the findings name it: ``class`` (a name), or multi-label ``labels`` (a list)."""
    label = np.asarray(label)
    if label.ndim == 1:
        return {"labels": [classes[k] for k in np.flatnonzero(label)]}
    return {"class": classes[int(label)]}


@dataclass
class Inspection:
    document: dict
    images: Images
    probabilities: np.ndarray | None = None  # out-of-fold, N × classes with images (None without a label check)


def inspect_dataset(spec: str, data: DataOptions, options: InspectOptions, reporter: Reporter) -> Inspection:
    """Inspect ``spec`` (any dataset vqtool reads); the findings document and the images it names."""
    options.check()
    timings, started = {}, time.perf_counter()
    dataset, label_files = _load(spec, data if data.val_split is not None else replace(data, val_split=0.0), options)
    backbone = load_backbone(options.model, options.weights, options.imgsz, options.device)
    listed = {name: split for name in SPLITS if (split := getattr(dataset, name)) is not None}
    decoded = {name: _decoded(split, name, dataset, backbone.preprocess, data, reporter)
               for name, split in listed.items()}
    images = Images.pooled(dataset.classes, decoded)
    timings["load_and_decode"] = _lap(started)
    document = {"dataset": dataset.name, "spec": spec, "task": _task(images, dataset), "classes": dataset.classes,
                "model": options.model, "weights": backbone.source, "image_size": backbone.preprocess.size}
    headers = _headers(decoded, reporter)
    document["splits"] = _split_summaries(listed, decoded, headers, dataset.classes)
    document["balance"] = label_checks.imbalance(images.counts(), multilabel=images.multilabel)
    if images.multilabel:
        document["balance"]["without_labels"] = int((images.labels.sum(axis=1) == 0).sum())
    document["unreadable"] = _unreadable(listed, decoded, dataset.classes)
    document["odd_files"] = _odd_files(images, headers)
    document["label_files"] = label_files
    exact = duplicates.exact_groups([d for split in decoded.values() for d in row_digests(split.pixels)], images.files)
    document["exact_duplicates"] = [_group(images, members) for members in exact]
    timings["files_and_exact_duplicates"] = _lap(started, timings)
    embeddings = embed(backbone, decoded, dataset, reporter, store=data.cache_store)
    timings["embeddings"] = _lap(started, timings)
    document["near_duplicates"] = _near(images, embeddings, exact, options, mirrored=dataset.flips)
    timings["near_duplicates"] = _lap(started, timings)
    document["label_issues"], document["label_check"], probabilities = _label_issues(
        images, embeddings, options, data.seed, detection=dataset.spec.get("detection", False), reporter=reporter,
        store=data.cache_store, name=dataset.name)
    document["outliers"] = _outliers(images, embeddings)
    timings["labels_and_outliers"] = _lap(started, timings)
    document["thresholds"] = {"near_similarity": options.near_threshold,
                              "near_detail_similarity": thumbnails.DETAIL_MATCH,
                              "near_layout_similarity": thumbnails.LAYOUT_MATCH, "neighbours": options.neighbours,
                              "outlier_z": label_checks.OUTLIER_Z, "folds": label_checks.FOLDS}
    document["counts"] = {key: len(document[key]) for key in
                          ("unreadable", "odd_files", "label_files", "exact_duplicates", "near_duplicates",
                           "label_issues", "outliers")}
    document["images"] = len(images)
    document["seconds"] = {**timings, "total": round(time.perf_counter() - started, 2)}
    reporter.log(f"inspected {plural(len(images), 'image')} of {dataset.name} in {document['seconds']['total']} s")
    return Inspection(document, images, probabilities)


def _load(spec: str, data: DataOptions, options: InspectOptions) -> tuple[Dataset, list[dict]]:
    """The dataset, and the problems of its label files (a YOLO data.yaml's). Multi-label data is read as `train
    --task multilabel` reads it (a data.yaml's image-level labels with --labels-from boxes); a data.yaml alone is its
    images inspected as one class, for the file checks, duplicates and outliers."""
    from vqtool.detection.data import is_yolo_yaml

    yaml = is_yolo_yaml(spec)
    if options.multilabel:
        from vqtool.multilabel.data import load_multilabel

        dataset = load_multilabel(spec, data, options.labels_from)
    elif yaml:
        dataset = _yolo_images(spec)
    else:
        return load_dataset(spec, data), []
    return dataset, _label_file_problems(spec) if yaml else []


def _yolo_images(spec: str) -> Dataset:
    from vqtool.detection.data import load_yolo, split_images

    yolo = load_yolo(spec)
    splits = {}
    for name, sources in yolo.splits.items():
        files = sorted(split_images(sources))
        splits[name] = Split(labels=torch.zeros(len(files), dtype=torch.long), files=files)
    return Dataset(name=yolo.name, classes=[YOLO_CLASS], channels=3, **splits, spec={"path": str(yolo.yaml), "detection": True})


def _label_file_problems(spec: str) -> list[dict]:
    from vqtool.detection.data import check_labels, load_yolo

    yolo = load_yolo(spec)
    return [{"image": image, "split": name, "reason": reason}
            for name in yolo.splits for image, reason in check_labels(yolo, name).invalid.items()]


def _task(images: Images, dataset: Dataset) -> str:
    if images.multilabel:
        return "multilabel"
    return "detection" if dataset.spec.get("detection") else "classification"


def _lap(started: float, timings: dict | None = None) -> float:
    return round(time.perf_counter() - started - sum((timings or {}).values()), 2)


def _decoded(split: Split, name: str, dataset: Dataset, preprocess: Preprocess, data: DataOptions,
             reporter: Reporter) -> Split:
    classes = None if split.labels.ndim == 2 else dataset.classes  # a class losing every image: single-label only
    return decode_split(split, preprocess, strict=data.strict, reporter=reporter, workers=data.workers, name=name,
                        classes=classes, store=data.cache_store)


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
        labels = split.labels.numpy()
        multilabel = labels.ndim == 2
        counts = labels.sum(axis=0).astype(int) if multilabel else np.bincount(labels, minlength=len(classes))
        summaries[name] = {"images": len(split), "listed": len(listed[name]) + len(listed[name].skipped),
                           "unreadable": len(listed[name]) - len(split) + len(listed[name].skipped),
                           "classes": {c: int(n) for c, n in zip(classes, counts)},
                           "size": size_summary([h for h in headers.get(name, ()) if h is not None]),
                           "mean": list(mean), "std": list(std)}
        if multilabel:
            summaries[name]["without_labels"] = int((labels.sum(axis=1) == 0).sum())
    return summaries


def _unreadable(listed: dict[str, Split], decoded: dict[str, Split], classes: list[str]) -> list[dict]:
    """The files (and folders, and list rows) that were listed but not decoded, with why."""
    found = []
    for name, split in listed.items():
        if split.files is None:
            continue
        kept = set(decoded[name].files)
        for path, label in zip(split.files, split.labels.numpy()):
            if path not in kept:
                found.append({"image": path, "split": name, **given(classes, label), "reason": _why(path)})
        unknown = {"labels": None} if split.labels.ndim == 2 else {"class": None}
        for path, reason in {**split.skipped, **split.rejected}.items():
            found.append({"image": path, "split": name, **unknown, "reason": reason})
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


def _group(images: Images, members: list[int], **similarities: float | None) -> dict:
    conflicting = len({images.label_key(m) for m in members}) > 1  # classes, or label sets, that differ
    across_splits = len({images.splits[m] for m in members}) > 1
    return {"images": [images.describe(m) for m in members], "across_classes": conflicting,
            "across_splits": across_splits,
            "relation": duplicates.relation(conflicting, across_splits, multilabel=images.multilabel),
            **similarities}


def _near(images: Images, embeddings: torch.Tensor, exact: list[list[int]], options: InspectOptions,
          mirrored: bool) -> list[dict]:
    """Near copies (not exact copies of one another), most alike first: the embedding neighbours whose detail
    matches, and the thumbnails' own neighbours whose layout matches (see :mod:`vqtool.inspection.thumbnails`);
    mirror images count only where the dataset's mirror images are fair."""
    same = {m: g for g, members in enumerate(exact) for m in members}
    thumbs = torch.cat([thumbnails.thumbnails(split.pixels) for split in images.parts.values()])
    by_embedding = _candidates(embeddings, options.near_threshold, options.neighbours, same)
    by_layout = _candidates(thumbnails.layout_vectors(thumbs, mirrored), thumbnails.LAYOUT_SEARCH,
                            options.neighbours, same)
    detail = dict(zip(by_embedding, thumbnails.detail_similarity(thumbs, by_embedding, mirrored)))
    layout = dict(zip(by_layout, thumbnails.layout_similarity(thumbs, by_layout, mirrored)))
    kept = {pair for pair, value in detail.items() if value >= thumbnails.DETAIL_MATCH}
    kept |= {pair for pair, value in layout.items() if value >= thumbnails.LAYOUT_MATCH}
    rows = [(i, j, round(float(embeddings[i] @ embeddings[j]), 4)) for i, j in kept]
    rows.sort(key=lambda row: (-row[2], row[0], row[1]))
    return [_group(images, [i, j], similarity=s, detail_similarity=detail.get((i, j)),
                   layout_similarity=layout.get((i, j))) for i, j, s in rows]


def _candidates(vectors: torch.Tensor, threshold: float, neighbours: int, same: dict[int, int]) -> list[tuple[int, int]]:
    """The pairs among each row's nearest neighbours at ``threshold`` or above, exact copies of one another left out."""
    return [(i, j) for i, j, _ in duplicates.near_pairs(vectors, threshold, neighbours)
            if not (i in same and same.get(j) == same[i])]


def _label_issues(images: Images, embeddings: torch.Tensor, options: InspectOptions, seed: int, detection: bool,
                  reporter: Reporter, store: bool, name: str):
    """The label-error candidates (most likely first), how they were looked for (or why not), and the
    out-of-fold probabilities."""
    if not options.labels:
        return [], {"done": False, "reason": "--no-label-check"}, None
    if detection:
        return [], {"done": False, "reason": "a detection dataset (its images hold boxes, not one label); its "
                                             "image-level labels: --labels-from boxes"}, None
    labels, named = _head_labels(images)
    if (reason := _unfit_for_label_check(images, labels, named)) is not None:
        return [], {"done": False, "reason": reason}, None
    probabilities = label_checks.stored_out_of_fold_probabilities(embeddings.numpy(), labels, seed, reporter, store,
                                                                   name)
    if images.multilabel:
        from vqtool.multilabel.metrics import best_thresholds

        # each label's threshold of the best F1 on the out-of-fold probabilities, as multi-label training picks them
        # on val: the regularised heads' probabilities stay low (on the Fashion-MNIST mosaics of the inspect guide,
        # thresholds 0.26-0.32; at 0.5, the exact-match ratio was 0.14 instead of 0.20)
        thresholds = np.asarray(best_thresholds(probabilities, labels))
        thresholds[labels.sum(axis=0) < label_checks.FOLDS] = 0.5  # too few images to choose one (a fold each)
        finding = partial(_multilabel_finding, thresholds=thresholds, named=named)
        exact = ((probabilities >= thresholds) == labels).all(axis=1).mean()
        agreement = {"out_of_fold_exact_match": round(float(exact), 4),
                     "thresholds": {label: round(float(t), 4) for label, t in zip(named, thresholds)}}
    else:
        finding = partial(_class_finding, named=named)
        agreement = {"out_of_fold_accuracy": round(float((probabilities.argmax(1) == labels).mean()), 4)}
    issues, proposed = label_checks.label_issues(labels, probabilities)
    found = [{**images.describe(i), **finding(labels[i], probabilities[i]), "rank": rank}
             for rank, i in enumerate(issues.tolist(), start=1)]
    if proposed > len(found):
        reporter.log(f"label check: {len(found)} of cleanlab's {proposed} candidates kept; the head finds the "
                     f"others' given label at least as likely as chance (its own confusions, not wrong labels)")
    return found, {"done": True, "folds": label_checks.folds_of(labels), **agreement,
                   "cleanlab_candidates": proposed}, probabilities


def _head_labels(images: Images) -> tuple[np.ndarray, list[str]]:
    """The label head's targets (classes renumbered to those with images; multi-label: the labels some image has)
    and their names."""
    if images.multilabel:
        present = np.flatnonzero(images.labels.any(axis=0))
        return images.labels[:, present], [images.classes[k] for k in present]
    present, labels = np.unique(images.labels, return_inverse=True)
    return labels, [images.classes[k] for k in present]


def _unfit_for_label_check(images: Images, labels: np.ndarray, named: list[str]) -> str | None:
    """Why the label head cannot be fitted (None when it can)."""
    if images.multilabel:
        if len(labels) < 2:
            return "fewer than two images"
        return None if named else "no image has a label"
    if len(named) < 2:
        return "fewer than two classes have images"
    counts = np.bincount(labels)
    return f"class {named[counts.argmin()]} has a single image" if counts.min() < 2 else None


def _class_finding(label: int, probabilities: np.ndarray, named: list[str]) -> dict:
    suggested = int(probabilities.argmax())
    return {"suggested": named[suggested], "given_probability": round(float(probabilities[label]), 4),
            "suggested_probability": round(float(probabilities[suggested]), 4)}


def _multilabel_finding(labels: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray,
                        named: list[str]) -> dict:
    """The suggested label set (the labels at their threshold or above), what it adds and drops, and the
    probabilities of the labels given or suggested."""
    suggested = probabilities >= thresholds
    return {"suggested": [n for n, s in zip(named, suggested) if s],
            "missing": [n for n, s, g in zip(named, suggested, labels) if s and not g],
            "doubtful": [n for n, s, g in zip(named, suggested, labels) if g and not s],
            "probabilities": {n: round(float(p), 4) for n, p, s, g in zip(named, probabilities, suggested, labels)
                              if s or g}}


def _outliers(images: Images, embeddings: torch.Tensor) -> list[dict]:
    similarity = label_checks.centre_similarity(embeddings.numpy(), images.labels)
    return [{**images.describe(i), "centre_similarity": round(float(similarity[i]), 4)}
            for i in label_checks.outliers(similarity).tolist()]

