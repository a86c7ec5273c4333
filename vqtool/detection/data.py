"""A YOLO ``data.yaml`` as a dataset source: images and label files Ultralytics trains and validates on.

Paths resolve exactly as Ultralytics resolves them (``path:`` if set, else the
yaml's own folder), because Ultralytics itself reads the yaml. vqtool checks
every split it names exists before anything runs, so a missing folder is one
clear error instead of a download attempt (or a run of the yaml's download
script), and that the label caches Ultralytics would unpickle are plain data.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from vqtool.errors import VQError, first_line
from vqtool.files import IMAGE_LIMIT, open_regular, read_bytes, read_text
from vqtool.pickles import LABEL_CACHE, check
from vqtool.registry import register_dataset

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class YoloDataset:
    """A resolved data.yaml: its class names and the image folders, lists or files of each split."""

    yaml: Path
    classes: list[str]
    splits: dict[str, list[str]]

    @property
    def name(self) -> str:
        return self.yaml.stem

    @property
    def heldout_split(self) -> str:
        """The split evaluation uses by default: test when there is one, else val (as for classifiers)."""
        return "test" if "test" in self.splits else "val"

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise VQError(f"{self.yaml}: no {split!r} split (it names {', '.join(self.splits)})", usage=True)
        return split


def is_yolo_yaml(spec) -> bool:
    return str(spec).lower().endswith((".yaml", ".yml"))


@register_dataset("yolo", matches=is_yolo_yaml, task="detection",
                  description="YOLO data.yaml: images/ + labels/ with paths relative to the yaml (detection)")
def load_yolo(spec: str, options=None) -> YoloDataset:
    from vqtool.detection.ultralytics_env import load_ultralytics

    load_ultralytics()
    from ultralytics.data.utils import check_det_dataset

    yaml = Path(spec).expanduser()
    if not yaml.is_file():
        raise VQError(f"{spec}: no such file", usage=True)
    try:
        info = check_det_dataset(str(yaml), autodownload=False)
    except (OSError, SyntaxError, TypeError, ValueError, KeyError, AttributeError) as error:
        raise VQError(f"{spec}: not a usable YOLO data.yaml ({first_line(error)})", usage=True) from error
    splits = {}
    for split in SPLITS:
        if info.get(split):
            paths = info[split] if isinstance(info[split], list) else [info[split]]
            missing = [p for p in paths if not Path(p).exists()]
            if missing:
                raise VQError(f"{spec}: the {split} images are not at {missing[0]}", usage=True)
            splits[split] = [str(p) for p in paths]
    for cache in label_caches(splits):
        check(cache, LABEL_CACHE)
    names = info["names"]
    return YoloDataset(yaml=yaml.resolve(), classes=[names[i] for i in sorted(names)], splits=splits)


def label_caches(splits: dict[str, list[str]]) -> list[Path]:
    """The ``labels/<split>.cache`` files (pickles) Ultralytics would read for these splits' images.

    Ultralytics reads the one beside the label folder of a split's first image;
    every folder holding a split's labels is covered here.
    """
    from ultralytics.data.utils import img2label_paths

    labels = img2label_paths([image for sources in splits.values() for image in split_images(sources)])
    caches = {Path(label).parent.with_suffix(".cache") for label in labels}
    return sorted(cache for cache in caches if cache.is_file())


# --- label files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelCheck:
    """A split's images and those Ultralytics would leave out (path -> why)."""

    split: str
    images: int
    invalid: dict[str, str]

    @property
    def usable(self) -> int:
        return self.images - len(self.invalid)


def check_labels(dataset: YoloDataset, split: str) -> LabelCheck:
    """Every image of ``split`` with its label file, checked by the rules Ultralytics applies.

    Ultralytics drops an image whose label file it rejects (or whose image it
    cannot open) and only logs it; this names them beforehand. No file is written.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ultralytics.data.utils import img2label_paths

    images = split_images(dataset.splits[split])
    labels = img2label_paths(images)
    with ThreadPoolExecutor(8) as pool:
        problems = list(pool.map(lambda pair: image_problem(*pair, len(dataset.classes)), zip(images, labels)))
    return LabelCheck(split, len(images), {image: problem for image, problem in zip(images, problems) if problem})


def split_images(sources: list[str]) -> list[str]:
    """The image files of a split's folders, list files or files, found as Ultralytics finds them."""
    import glob
    import os

    from ultralytics.data.utils import IMG_FORMATS

    found = []
    for source in map(Path, sources):
        if source.is_dir():
            found += glob.glob(str(Path(glob.escape(str(source))) / "**" / "*.*"), recursive=True)
        elif source.is_file():  # a list of image paths, "./" relative to the list
            parent = str(source.parent) + os.sep
            lines = read_bytes(source).decode("utf-8-sig", errors="replace").strip().splitlines()
            found += [line.replace("./", parent, 1) if line.startswith("./") else line for line in lines]
    return sorted(path for path in found if path.rpartition(".")[-1].lower() in IMG_FORMATS)


def image_problem(image: str, label_file: str, num_classes: int) -> str | None:
    """Why Ultralytics would leave this image out, or None (a missing or empty label file is background)."""
    from PIL import Image

    try:
        with open_regular(image, IMAGE_LIMIT) as file, Image.open(file) as opened:
            width, height = opened.size
            image_format = opened.format
    except Exception as error:  # noqa: BLE001 - whatever Pillow raises, Ultralytics drops the image
        return f"unreadable image ({first_line(error)})"
    if image_format == "JPEG" and not _ends_with_jpeg_marker(image):
        return TRUNCATED_JPEG
    if width < 10 or height < 10:
        return f"image of {width}x{height} pixels (Ultralytics needs at least 10x10)"
    problem = label_problem(label_file, num_classes)
    return f"{label_file}: {problem}" if problem else None


TRUNCATED_JPEG = "JPEG without its end marker"
NOT_REGULAR = "not a regular file"  # in the reason NotRegularFile gives


def _ends_with_jpeg_marker(image: str) -> bool:
    with open(image, "rb") as file:
        file.seek(-2, 2)
        return file.read() == b"\xff\xd9"


def label_problem(label_file: str, num_classes: int) -> str | None:
    """What is wrong with a YOLO label file (rows of class x y w h, or class and polygon points), or None."""
    import numpy as np

    path = Path(label_file)
    if not path.is_file():
        return None
    try:
        rows = [line.split() for line in read_text(path, encoding="utf-8-sig").splitlines() if line.strip()]
    except (OSError, ValueError) as error:
        return f"cannot read it ({first_line(error)})"
    if not rows:
        return None
    try:
        boxes = _polygon_boxes(rows) if any(len(row) > 6 for row in rows) else np.array(rows, dtype=np.float32)
    except ValueError as error:
        return f"not rows of numbers ({first_line(error)})"
    return _box_problem(boxes, num_classes)


def _polygon_boxes(rows: list[list[str]]):
    """Polygon rows (class x1 y1 x2 y2 ...) as class + xywh rows, as Ultralytics converts them."""
    import numpy as np
    from ultralytics.utils.ops import segments2boxes

    if any(len(row) == 5 for row in rows):
        raise ValueError("box rows and polygon rows are mixed")
    classes = np.array([row[0] for row in rows], dtype=np.float32)
    segments = [np.array(row[1:], dtype=np.float32).reshape(-1, 2) for row in rows]
    return np.concatenate((classes.reshape(-1, 1), segments2boxes(segments)), 1)


def _box_problem(boxes, num_classes: int) -> str | None:
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        return f"rows must have 5 values (class x y w h), not {boxes.shape[-1] if boxes.ndim == 2 else 'varying'}"
    points, classes = boxes[:, 1:], boxes[:, 0]
    if not points.max() <= 1.01:  # `not <=` also catches NaN
        return "coordinates must be normalised to 0..1"
    if not (boxes.min() >= 0 or (boxes.min() >= -0.01 and boxes[:, 3:5].min() >= 0)):
        return "negative values"
    if not (classes % 1 == 0).all():
        return "class ids must be whole numbers"
    if classes.max() >= num_classes:
        return f"class {int(classes.max())} is not among the {num_classes} classes of the data.yaml"
    return None


def usable_images(dataset: YoloDataset, split: str, reporter) -> LabelCheck:
    """``check_labels`` said out loud: the left-out images named, none usable an error."""
    check = check_labels(dataset, split)
    if check.images == 0:
        raise VQError(f"{dataset.yaml}: no image files in the {split} split ({', '.join(dataset.splits[split])})")
    if not check.invalid:
        return check
    _refuse_truncated_jpegs(dataset, check)
    _refuse_special_files(dataset, check)
    listed, more = _listing(check.invalid)
    if check.usable == 0:
        raise VQError(f"{dataset.yaml}: none of the {check.images} {split} images can be used: {listed}{more}")
    reporter.warn(f"skipped {len(check.invalid)} of {check.images} {split} images with invalid labels or unreadable "
                  f"files: {listed}{more}")
    return check


def _refuse_truncated_jpegs(dataset: YoloDataset, check: LabelCheck) -> None:
    """Ultralytics "restores" such a JPEG by re-encoding it over the user's file; vqtool never changes a dataset."""
    truncated = {image: why for image, why in check.invalid.items() if why == TRUNCATED_JPEG}
    if truncated:
        listed, more = _listing(truncated)
        raise VQError(f"{dataset.yaml}: {len(truncated)} {check.split} JPEG file(s) lack their end marker "
                      f"(truncated or damaged) and Ultralytics would rewrite them in place: {listed}{more}; "
                      "re-save or remove them")


def _refuse_special_files(dataset: YoloDataset, check: LabelCheck) -> None:
    """A FIFO or device among the images or labels: Ultralytics would open it and wait forever (or read without
    end); vqtool reads only regular files and stops here."""
    special = {image: why for image, why in check.invalid.items() if NOT_REGULAR in why}
    if special:
        listed, more = _listing(special)
        raise VQError(f"{dataset.yaml}: {len(special)} {check.split} image(s) or label file(s) are not regular files "
                      f"(a FIFO or device would block Ultralytics): {listed}{more}; remove them")


def _listing(problems: dict[str, str]) -> tuple[str, str]:
    listed = "; ".join(f"{image} ({why})" for image, why in list(problems.items())[:5])
    return listed, f" and {len(problems) - 5} more" if len(problems) > 5 else ""


@contextlib.contextmanager
def no_valid_images_as_error(dataset: YoloDataset):
    """Ultralytics' own 'No valid images found' (images it rejects that the check above let through) as one line."""
    try:
        yield
    except RuntimeError as error:
        if "No valid images" not in str(error):
            raise
        raise VQError(f"{dataset.yaml}: Ultralytics found no usable images ({first_line(error)})") from error
