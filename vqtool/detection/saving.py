"""What `detect --save-dir` writes: annotated images and YOLO label files, never over an input or earlier file.

The save folder must lie outside what is read (:func:`check_save_dir`):
otherwise the annotated copies would replace the photos, or be read back as
inputs by the next run. Each file is written under a temporary name and
renamed into place (:func:`vqtool.runs.atomic_files.atomic_save`), so a full disk or
a permission error leaves no truncated image or empty label file; an
existing file is replaced only with ``--overwrite``, and an input never.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from vqtool.data.inputs import check_outside_sources, real_path
from vqtool.errors import VQError
from vqtool.runs.atomic_files import atomic_write

FALLBACK_SUFFIX = ".png"  # for an input whose format OpenCV cannot write


def check_save_dir(sources: Iterable[str], save_dir: Path) -> None:
    """Usage error when ``save_dir`` is, contains or lies inside a folder being read (or is a file's folder).

    Paths read from stdin (``-``) are checked as they are saved: an output never replaces its input.
    """
    check_outside_sources(sources, save_dir, "--save-dir", "annotated images")


def output_stem(frame) -> Path:
    """The name, without suffix, that a frame's annotated image and label file get under --save-dir."""
    stem = Path(frame.input.name).with_suffix("")
    return stem.with_name(f"{stem.name}_{frame.index}") if frame.index is not None else stem


def save_outputs(save_dir: Path, frame, result, record: dict, save_txt: bool, overwrite: bool = False) -> dict:
    """The annotated image (boxes, labels, confidences) and, with --save-txt, a YOLO label file; returns their paths
    (``saved_image``, ``saved_labels``).

    ``frame`` is a :class:`vqtool.detection.predict.Frame`, ``result`` Ultralytics' Results for it.
    """
    stem = output_stem(frame)
    suffix = ".jpg" if frame.index is not None else Path(frame.input.name).suffix
    suffix, encoded = encode_image(result.plot(), suffix)
    written = {"saved_image": str(save_dir / stem.with_name(stem.name + suffix))}
    write_output(Path(written["saved_image"]), encoded, frame.input.path, overwrite)
    if save_txt:
        label = "".join(yolo_label_line(d) for d in record["detections"])
        written["saved_labels"] = str(save_dir / "labels" / stem.with_name(stem.name + ".txt"))
        write_output(Path(written["saved_labels"]), label.encode(), frame.input.path, overwrite)
    return written


def encode_image(image, suffix: str) -> tuple[str, bytes]:
    """(suffix, file bytes) of a BGR image, as Ultralytics' imwrite encodes it; PNG where OpenCV cannot write
    the input's format."""
    import cv2

    try:
        ok, buffer = cv2.imencode(suffix, image)
    except cv2.error:
        ok = False
    if not ok:
        suffix = FALLBACK_SUFFIX
        ok, buffer = cv2.imencode(suffix, image)
    return suffix, buffer.tobytes()


def write_output(path: Path, payload: bytes, input_path: str, overwrite: bool) -> None:
    """Write one output file atomically; never over its own input, over another file only with ``overwrite``."""
    if real_path(path) == real_path(input_path):
        raise VQError(f"--save-dir: {path} is the input itself; choose a --save-dir outside the inputs' folders",
                      usage=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VQError(f"{path.parent}: cannot create it ({error.strerror or error})") from error
    atomic_write(path, payload, replace=overwrite)


def yolo_label_line(detection: dict) -> str:
    """``class cx cy w h`` with normalized coordinates: the YOLO label format."""
    return f"{detection['class_id']} " + " ".join(f"{v:.6f}" for v in detection["xywhn"]) + "\n"
