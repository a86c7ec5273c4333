"""What ``detect`` and ``predict`` are asked to look at: SOURCE arguments expanded to image files and video frames.

A SOURCE is an image or video file, a folder (searched recursively for image
files; hidden files and macOS debris such as ``__MACOSX/``, ``.DS_Store`` and
``._photo.jpg`` are left out, symlinked subfolders are not followed), a glob
(``'shots/**/*.jpg'``), or ``-`` for paths read from stdin, one per line, used
as they arrive. Whatever cannot be used is a :class:`Failure` in the stream, in
its place, so the caller reports it and goes on. Nothing here decodes an image:
each task decodes the way its models expect (Ultralytics' reader for
detectors, :mod:`vqtool.data.images` for classifiers); video frames are read
here, with OpenCV, the way Ultralytics reads them.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from vqtool.data.images import IMAGE_EXTENSIONS, image_files
from vqtool.errors import VQError, native_stderr_hidden

# Ultralytics' video formats (ultralytics.data.utils.VID_FORMATS) less the image ones: a .gif is read as an image.
VIDEO_EXTENSIONS = {".asf", ".avi", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".webm", ".wmv"}
STDIN = "-"


@dataclass(frozen=True)
class Failure:
    """An input that was skipped, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Input:
    """A file to read; ``name`` is its path relative to the folder it was found in (outputs keep that layout)."""

    path: str
    name: str
    video: bool = False


@dataclass
class Frame:
    """One decoded image, or one frame of a video (``index``: its position in the video, from 0)."""

    input: Input
    image: object  # what the task's decoder returns: a BGR array for detectors, a uint8 tensor for classifiers
    index: int | None = None


def expand_sources(sources: Iterable[str], stdin=None) -> Iterator[Input | Failure]:
    """Every input the SOURCE arguments name, in order (each folder's files sorted)."""
    for source in sources:
        if source == STDIN:
            for line in stdin or sys.stdin:
                path = line.rstrip("\r\n")
                if path.strip():
                    yield from _expand(path.strip())
        else:
            yield from _expand(source)


def _expand(source: str) -> Iterator[Input | Failure]:
    if "\0" in source:  # the OS cannot open such a name; say so for this one line, not for the whole stream
        yield Failure(source.replace("\0", "\\0"), "the path contains a NUL byte")
        return
    path = Path(source).expanduser()
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as error:  # a name too long, a loop of links
        yield Failure(source, error.strerror or str(error))
        return
    if is_dir:
        yield from _folder(path, source)
    elif is_file:
        yield _file(path)
    elif glob.has_magic(source):
        yield from _glob(source)
    else:
        yield Failure(source, "no such file or folder")


def _glob(pattern: str) -> Iterator[Input | Failure]:
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    if not matches:
        yield Failure(pattern, "no files match")
    for match in matches:
        if Path(match).is_dir():
            yield from _folder(Path(match), match)
        else:
            yield _file(Path(match))


def _folder(folder: Path, source: str) -> Iterator[Input | Failure]:
    unreadable: dict[str, str] = {}
    try:
        files = image_files(folder, unreadable)
    except VQError as error:  # the folder itself cannot be listed
        yield Failure(source, str(error).removeprefix(f"{folder}: "))
        return
    for subfolder, reason in unreadable.items():
        yield Failure(subfolder, reason)
    if not files and not unreadable:
        yield Failure(source, "no image files in this folder")
    for file in files:
        yield Input(file, str(Path(file).relative_to(folder)))


def _file(path: Path) -> Input | Failure:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return Input(str(path), path.name)
    if suffix in VIDEO_EXTENSIONS:
        return Input(str(path), path.name, video=True)
    return Failure(str(path), "not an image or video file")


def video_frames(item: Input, stride: int = 1) -> Iterator[Frame | Failure]:
    """Every ``stride``-th frame as a BGR array, read as Ultralytics reads videos (grab ``stride``, decode the last)."""
    import cv2

    with native_stderr_hidden():
        capture = cv2.VideoCapture(item.path)
    index, count = -1, 0
    try:
        while capture.isOpened():
            with native_stderr_hidden():  # the decoder's complaints about damaged frames
                grabbed = all(capture.grab() for _ in range(stride))
                ok, image = capture.retrieve() if grabbed else (False, None)
            index += stride
            if not ok or image is None:
                break
            count += 1
            yield Frame(item, image, index)
    finally:
        capture.release()
    if count == 0:
        yield Failure(item.path, "cannot read any frame from the video")


# --- outputs beside the inputs ----------------------------------------------------------------------------------


def check_outside_sources(sources: Iterable[str], folder: Path, option: str, what: str) -> None:
    """Usage error when an output ``folder`` is, contains or lies inside a folder being read (or a file's folder):
    ``what`` (the files written there) would replace the inputs or be read back as inputs by the next run."""
    target = real_path(folder)
    for source in sources:
        for read, nested in _folders_read(source):
            real = real_path(read)
            if target == real or (nested and (real in target.parents or target in real.parents)):
                raise VQError(f"{option} {folder}: {_relation(target, real)} {read}, which is read; {what} would "
                              f"replace the inputs or be read as inputs next time (choose a folder outside it)",
                              usage=True)


def _folders_read(source: str) -> Iterable[tuple[Path, bool]]:
    """(folder, read recursively?) for what a source reads from: a folder, a file's folder, a glob's root."""
    if source == STDIN or "\0" in source:
        return []
    path = Path(source).expanduser()
    if path.is_dir():
        return [(path, True)]
    if path.is_file():
        return [(path.parent, False)]
    if glob.has_magic(source):
        parts = Path(os.path.expanduser(source)).parts
        first_pattern = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        return [(Path(*parts[:first_pattern]) if first_pattern else Path("."), "**" in source)]
    return []


def _relation(target: Path, folder: Path) -> str:
    if target == folder:
        return "it is"
    return "it lies inside" if folder in target.parents else "it contains"


def real_path(path) -> Path:
    """Where a path really leads (links resolved): two names of one file compare equal."""
    return Path(os.path.realpath(Path(path).expanduser()))
