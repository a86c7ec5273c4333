"""Streaming classification: sources -> decoded images -> batches -> the classifier -> one record per image.

Images are decoded and preprocessed exactly as ``eval`` prepares them (the
checkpoint's recipe through :func:`vqtool.data.images.load_image_sized`, then
the same :class:`~vqtool.data.pipeline.Normalizer`), so a record's top class is
the one ``eval`` counts. Worker threads decode the next batch while the model
runs on this one (Pillow releases the GIL); at most two batches are decoded
ahead, so memory stays flat however many images stream through. Records come
out in input order, each as soon as its batch is done; an input that cannot be
read is a :class:`~vqtool.data.inputs.Failure` in its place.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch

from vqtool.classification.inference.classifier import Classifier
from vqtool.classification.config import PredictOptions
from vqtool.classification.inference.records import image_record, ranked
from vqtool.compute.device import resolve_device
from vqtool.compute.precision import inference_autocast
from vqtool.data.images import UnreadableImage, fit_square, load_image_sized, pillow_limits, to_tensor
from vqtool.data.inputs import Failure, Frame, Input, check_outside_sources, expand_sources, video_frames
from vqtool.data.pipeline import Normalizer, Preprocess, stack_images
from vqtool.errors import VQError
from vqtool.reporter import plural

BATCHES_AHEAD = 2  # decoded batches waiting for the model: enough to hide decoding, little memory


def predict(sources: Iterable[str], classifier: Classifier, options: PredictOptions, *, activation: str = "softmax",
            records=None) -> Iterator[dict | Failure]:
    """Load and check everything now, before the first image; returns the stream of records and Failures.

    ``activation`` turns logits into scores (softmax, or sigmoid for multi-label models); ``records(scores,
    frames)`` makes the batch's records (default: each image's top-k classes).
    """
    sources = list(sources)
    if options.tta:
        check_flips_allowed(classifier)
    probabilities = Probabilities(classifier, options.device, options.tta, options.amp, activation)
    after = _after_each_batch(sources, classifier, probabilities.device, options)
    return _stream(sources, classifier, probabilities, after, options, records or _top_k_records(classifier, options))


def _top_k_records(classifier: Classifier, options: PredictOptions):
    def records(scores: torch.Tensor, frames: list[Frame]) -> list[dict]:
        top = ranked(scores, classifier.classes, options.top_k)
        return [image_record(f.input.path, f.index, f.image[1], t) for f, t in zip(frames, top)]

    return records


def _after_each_batch(sources: list[str], classifier: Classifier, device, options: PredictOptions) -> list:
    """What --sort-into and --cam do with each batch: callables (frames, records) -> None."""
    after = []
    if options.sort_into:
        from vqtool.classification.inference.sorting import Sorter

        check_outside_sources(sources, Path(options.sort_into), "--sort-into", "sorted copies")
        sorter = Sorter(options.sort_into, link=options.link, min_confidence=options.min_confidence)

        def sort(frames, records):
            for record in records:
                copy = sorter.place(record)
                if copy is not None:
                    record["sorted_to"] = str(copy)

        after.append(sort)
    if options.cam_dir:
        from vqtool.classification.inference.cam import GradCam, save_cam

        check_outside_sources(sources, Path(options.cam_dir), "--cam", "heatmap figures")
        cam = GradCam(classifier, options.cam_layer, device)
        folder = Path(options.cam_dir)
        folder.mkdir(parents=True, exist_ok=True)

        def save_cams(frames, records):
            pixels = stack_images([frame.image[0] for frame in frames])
            maps = cam.heatmaps(pixels, [record["top"][0]["class_id"] for record in records])
            for frame, record, heatmap, image in zip(frames, records, maps, pixels):
                stem = str(Path(frame.input.name).with_suffix("")) + ("" if frame.index is None else f"_{frame.index}")
                record["cam"] = str(save_cam(folder, stem, image, heatmap,
                                             f"{record['class']} {record['confidence']:.3f}"))

        after.append(save_cams)
    return after


def check_flips_allowed(classifier: Classifier) -> None:
    """--tta flips images: refused for a model whose training data is not left-right symmetric (digits, text)."""
    recorded = (classifier.meta.get("dataset") or {}).get("flips")
    if recorded is None:
        raise VQError("--tta: this model does not record whether its training data allows horizontal flips "
                      "(trained by an older vqtool); retrain it to use --tta", usage=True)
    if not recorded:
        source = (classifier.meta.get("dataset") or {}).get("source", "its dataset")
        raise VQError(f"--tta: this model was trained on {source}, whose images are not flipped in training "
                      f"(a mirrored image is another thing there); --tta would average in wrong answers", usage=True)


class Probabilities:
    """uint8 batch -> softmax (or sigmoid) probabilities (N×K, float32 on the CPU), as ``eval`` feeds the model."""

    def __init__(self, classifier: Classifier, device: str, tta: bool, amp: str = "auto", activation: str = "softmax"):
        self.model = classifier.model
        self.amp = amp if isinstance(self.model, torch.nn.Module) else "off"  # an export runs as it was exported
        self.device = resolve_device(device) if isinstance(self.model, torch.nn.Module) else torch.device("cpu")
        if isinstance(self.model, torch.nn.Module):
            self.model.to(self.device).eval()
        self.normalize = Normalizer(classifier.preprocess, self.device,
                                    channels_last=isinstance(self.model, torch.nn.Module))
        self.tta = tta
        self.classes = len(classifier.classes)
        self.activate = (lambda logits: logits.softmax(1)) if activation == "softmax" else torch.sigmoid

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)
        with inference_autocast(self.device, self.amp):
            probabilities = self.activate(self.model(x).float())
            if self.tta:
                probabilities = (probabilities + self.activate(self.model(x.flip(-1)).float())) / 2
        if probabilities.ndim != 2 or probabilities.shape[1] != self.classes:
            raise VQError(f"the model gives {tuple(probabilities.shape)} scores per batch but names {self.classes} "
                          f"classes; its weights and class names do not belong together")
        return probabilities.cpu()


def _stream(sources, classifier, probabilities, after, options, records_of) -> Iterator[dict | Failure]:
    workers = options.workers or min(8, (os.cpu_count() or 1) * 2)
    ahead = BATCHES_AHEAD * options.batch_size
    with pillow_limits(), ThreadPoolExecutor(workers) as pool:
        decoded = _decoded(expand_sources(sources), classifier.preprocess, pool, ahead, options.vid_stride)
        for batch in _batches(decoded, options.batch_size):
            frames = [item for item in batch if isinstance(item, Frame)]
            records = []
            if frames:
                records = records_of(probabilities(stack_images([f.image[0] for f in frames])), frames)
                for step in after:
                    step(frames, records)
            in_order = iter(records)
            for item in batch:
                yield item if isinstance(item, Failure) else next(in_order)


def _decoded(inputs, preprocess: Preprocess, pool: ThreadPoolExecutor, ahead: int,
             vid_stride: int) -> Iterator[Frame | Failure]:
    """Frames whose ``image`` is (uint8 tensor, original (width, height)), decoded ``ahead`` items in advance."""
    pending: deque[Future | Failure] = deque()
    for item in _frames(inputs, vid_stride):
        pending.append(item if isinstance(item, Failure) else pool.submit(_decode, item, preprocess))
        if len(pending) > ahead:
            yield _result(pending.popleft())
    while pending:
        yield _result(pending.popleft())


def _frames(inputs, vid_stride: int) -> Iterator[Input | Frame | Failure]:
    """Image files as they are (decoded in the pool), video frames as OpenCV reads them."""
    for item in inputs:
        if isinstance(item, Input) and item.video:
            yield from video_frames(item, vid_stride)
        else:
            yield item


def _result(item: Future | Failure) -> Frame | Failure:
    return item if isinstance(item, Failure) else item.result()


def _decode(item: Input | Frame, preprocess: Preprocess) -> Frame | Failure:
    if isinstance(item, Frame):  # a video frame: BGR, already upright
        import numpy as np
        from PIL import Image

        image = Image.fromarray(np.ascontiguousarray(item.image[:, :, ::-1])).convert("L" if preprocess.channels == 1 else "RGB")
        pixels = to_tensor(fit_square(image, preprocess.size, preprocess.resize, preprocess.interpolation))
        return Frame(item.input, (pixels, image.size), item.index)
    try:
        return Frame(item, load_image_sized(item.path, preprocess.size, preprocess.channels, preprocess.resize,
                                            preprocess.interpolation))
    except UnreadableImage as error:
        return Failure(item.path, f"cannot read the image ({error})")


def _batches(items: Iterable[Frame | Failure], size: int) -> Iterator[list[Frame | Failure]]:
    """Runs of items holding ``size`` frames (Failures ride along in their place)."""
    batch, frames = [], 0
    for item in items:
        batch.append(item)
        frames += isinstance(item, Frame)
        if frames == size:
            yield batch
            batch, frames = [], 0
    if batch:
        yield batch


@dataclass
class PredictSummary:
    """What the final stderr lines of ``vqtool predict`` report: the results, then where --sort-into and --cam
    put how many files."""

    images: int = 0
    failed: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    confidence: float = 0.0
    sort_into: str | None = None
    cam_dir: str | None = None
    sorted: dict[str, int] = field(default_factory=dict)  # class folder -> copies
    cams: int = 0

    def add(self, record: dict) -> None:
        self.images += 1
        self.per_class[record["class"]] = self.per_class.get(record["class"], 0) + 1
        self.confidence += record["confidence"]
        if "sorted_to" in record:
            folder = Path(record["sorted_to"]).parent.name
            self.sorted[folder] = self.sorted.get(folder, 0) + 1
        self.cams += "cam" in record

    def lines(self, seconds: float) -> list[str]:
        lines = [self.line(seconds)]
        if self.sort_into:
            counts = ", ".join(f"{name} {count}" for name, count in sorted(self.sorted.items()))
            lines.append(f"--sort-into: {plural(sum(self.sorted.values()), 'image')} put into {self.sort_into}"
                         + (f" ({counts})" if counts else ""))
        if self.cam_dir:
            lines.append(f"--cam: {plural(self.cams, 'Grad-CAM figure')} written into {self.cam_dir}")
        return lines

    def line(self, seconds: float) -> str:
        if not self.images:
            return f"no images{f', {self.failed} skipped' if self.failed else ''}"
        counts = ", ".join(f"{name} {count}" for name, count in sorted(self.per_class.items(),
                                                                     key=lambda kv: (-kv[1], kv[0])))
        failed = f", {self.failed} skipped" if self.failed else ""
        return (f"{plural(self.images, 'image')}{failed}: {counts}; mean confidence "
                f"{self.confidence / self.images:.3f}; {1000 * seconds / self.images:.1f} ms per image")
