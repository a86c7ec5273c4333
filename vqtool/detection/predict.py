"""Streaming detection: sources -> decoded frames -> batches -> Ultralytics predict -> one record per image.

Nothing is accumulated: each record is yielded as soon as its batch is done,
and paths read from stdin are used as they arrive. Frames are decoded exactly
as Ultralytics decodes them and batched as its own loader batches them, so a
record's boxes equal what ``YOLO(weights).predict`` gives for the same file
and settings. A video frame's record also carries ``frame``, the frame's
index in the video (from 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from vqtool.choices import DEFAULT_DEVICE
from vqtool.data.inputs import Failure, Frame, Input, expand_sources, video_frames
from vqtool.detection.saving import check_save_dir, save_outputs
from vqtool.detection.ultralytics_env import keeping_threads
from vqtool.detection.weights import load_detector
from vqtool.errors import VQError, native_stderr_hidden, suggest
from vqtool.option_fields import option
from vqtool.reporter import plural


@dataclass
class DetectOptions:
    """`vqtool detect`'s options (its Click options are made from the option fields)."""

    conf: float = option(0.25, "Minimum confidence.", min=0, max=1, show_default=True)
    iou: float = option(0.7, "IoU threshold of non-maximum suppression.", min=0, max=1, show_default=True)
    imgsz: int = option(640, "Inference size in pixels.", min=32, show_default=True)
    classes: list[str] | None = None  # --classes NAME,...: the command splits the list
    device: str = DEFAULT_DEVICE  # --device: PredictOptions.device's option (where a model runs)
    max_det: int = option(300, "Most detections per image.", min=1, show_default=True)
    batch: int = option(1, "Images per forward pass.", min=1, show_default=True)
    vid_stride: int = option(1, "Use every N-th video frame.", min=1, show_default=True)
    save_dir: Path | None = option(None, "Write annotated images here. Refused when it is, contains or lies inside a "
                                   "source folder (the copies would replace the inputs or be read as inputs next "
                                   "time).", output="folder")
    save_txt: bool = option(False, "Also write YOLO label files to SAVE_DIR/labels.")
    overwrite: bool = option(False, "Replace files already in SAVE_DIR (without it an existing file is an error; an "
                             "input is never replaced).")

    def check(self) -> None:
        """The options that go with another (the fields' own ranges are Click's, as typed)."""
        if self.save_txt and not self.save_dir:
            raise VQError("--save-txt needs --save-dir DIR (labels go to DIR/labels)", usage=True)


def detect(sources: Iterable[str], weights: str, options: DetectOptions):
    """Load the model and check the options now; returns the stream of records and Failures."""
    if options.save_dir:  # refused before anything is loaded
        sources = list(sources)
        check_save_dir(sources, Path(options.save_dir))
    model = load_detector(weights)
    names = dict(model.names)
    args = {"conf": options.conf, "iou": options.iou, "imgsz": options.imgsz, "max_det": options.max_det,
            "classes": class_ids(options.classes, names), "device": ultralytics_device(options.device),
            "verbose": False}
    if options.save_dir:  # fail now, not after the first batch, when it cannot be made
        try:
            Path(options.save_dir).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise VQError(f"--save-dir {options.save_dir}: cannot create it ({error.strerror or error})") from error
    return _stream(model, names, sources, args, options)


def _stream(model, names, sources, args, options) -> Iterator[dict | Failure]:
    with keeping_threads():
        frames = read_frames(expand_sources(sources), options.vid_stride)
        for batch in batched(frames, options.batch):
            if isinstance(batch, Failure):
                yield batch
                continue
            results = model.predict([frame.image for frame in batch], **args)
            for frame, result in zip(batch, results):
                record = to_record(frame, result, names)
                if options.save_dir:
                    record.update(save_outputs(Path(options.save_dir), frame, result, record, options.save_txt,
                                               options.overwrite))
                yield record


def ultralytics_device(device: str):
    """vqtool's --device for Ultralytics: auto lets it choose; the others are checked the vqtool way."""
    if device == "auto":
        return None
    if "," in device:  # several GPUs: Ultralytics runs its own DDP
        return device
    from vqtool.compute.device import resolve_device

    return str(resolve_device(device))


def class_ids(wanted: list[str] | None, names: dict[int, str]) -> list[int] | None:
    """--classes as model class ids: names, or ids where no class has that name."""
    if not wanted:
        return None
    by_name = {name: index for index, name in names.items()}
    ids = []
    for item in wanted:
        if item in by_name:
            ids.append(by_name[item])
        elif item.isdigit() and int(item) in names:
            ids.append(int(item))
        else:
            raise VQError(f"--classes: the model has no class {item!r}{suggest(item, by_name)} "
                          f"(classes: {', '.join(names.values())})", usage=True)
    return ids


# --- decoding and batching ------------------------------------------------------------------------


def read_frames(inputs: Iterable[Input | Failure], vid_stride: int = 1) -> Iterator[Frame | Failure]:
    for item in inputs:
        if isinstance(item, Failure):
            yield item
        elif item.video:
            yield from video_frames(item, vid_stride)
        else:
            yield _image_frame(item)


def _image_frame(item: Input) -> Frame | Failure:
    import cv2
    from ultralytics.utils.patches import imread

    with native_stderr_hidden():  # libjpeg's "Corrupt JPEG data", libpng's warnings: the outcome is reported
        image = imread(item.path, cv2.IMREAD_COLOR)
    if image is None:
        return Failure(item.path, "cannot read the image (unreadable, empty or not really an image)")
    return Frame(item, image)


def batched(frames: Iterable[Frame | Failure], size: int) -> Iterator[list[Frame] | Failure]:
    """Batches of up to ``size`` frames, never mixing two videos or images with video frames (as Ultralytics)."""
    batch: list[Frame] = []
    for frame in frames:
        if isinstance(frame, Failure):
            yield frame
            continue
        if batch and (frame.input.video or batch[-1].input.video) and frame.input is not batch[-1].input:
            yield batch
            batch = []
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- results --------------------------------------------------------------------------------------


def to_record(frame: Frame, result, names: dict[int, str]) -> dict:
    """The JSON document for one image or video frame."""
    height, width = result.orig_shape
    boxes = result.boxes
    detections = [
        {"class_id": class_id, "class_name": names[class_id], "confidence": round(confidence, 5),
         "xyxy": [round(v, 3) for v in xyxy], "xywhn": [round(v, 6) for v in xywhn]}
        for class_id, confidence, xyxy, xywhn in zip(boxes.cls.int().tolist(), boxes.conf.tolist(),
                                                     boxes.xyxy.tolist(), boxes.xywhn.tolist())
    ]
    record = {"path": frame.input.path}
    if frame.index is not None:
        record["frame"] = frame.index
    record.update(width=width, height=height, detections=detections)
    return record


@dataclass
class DetectSummary:
    """What the final stderr line of ``vqtool detect`` reports."""

    images: int = 0
    failed: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    save_dir: str | None = None
    saved: dict[str, int] = field(default_factory=dict)  # "saved_image" / "saved_labels" -> files

    def add(self, record: dict) -> None:
        self.images += 1
        for detection in record["detections"]:
            name = detection["class_name"]
            self.per_class[name] = self.per_class.get(name, 0) + 1
        for key in ("saved_image", "saved_labels"):
            self.saved[key] = self.saved.get(key, 0) + (key in record)

    def lines(self, seconds: float) -> list[str]:
        if not self.save_dir:
            return [self.line(seconds)]
        labels = (f" and {plural(self.saved['saved_labels'], 'label file')} in {Path(self.save_dir) / 'labels'}"
                  if self.saved.get("saved_labels") else "")
        return [self.line(seconds), f"--save-dir: {plural(self.saved.get('saved_image', 0), 'annotated image')} "
                                    f"written into {self.save_dir}{labels}"]

    def line(self, seconds: float) -> str:
        found = ", ".join(f"{name} {count}" for name, count in sorted(self.per_class.items())) or "nothing"
        per_image = f"{1000 * seconds / self.images:.1f} ms per image" if self.images else "no images"
        failed = f", {self.failed} skipped" if self.failed else ""
        return (f"{plural(self.images, 'image')}{failed}; {plural(sum(self.per_class.values()), 'detection')} "
                f"({found}); {per_image}")
