"""``predict --sort-into``: a copy (or link) of each classified image in a folder named after its class.

Originals are only read: never moved, renamed or written. A name already
taken in the class folder is never replaced: the image gets the next free
name (``photo_1.jpg``, ``photo_2.jpg``...), claimed atomically, so two images
called ``photo.jpg`` from different folders both arrive. Images whose top
confidence is below ``min_confidence`` go to ``_uncertain/``. Video frames are
not sorted (the video is one file).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from vqtool.errors import VQError
from vqtool.runs.atomic_files import install, settle, temporary_path

UNCERTAIN = "_uncertain"
MAX_CLASHES = 10_000  # names tried per image before giving up


class Sorter:
    def __init__(self, root: str | Path, *, link: bool = False, min_confidence: float | None = None):
        self.root = Path(root)
        self.link = link
        self.min_confidence = min_confidence
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise VQError(f"--sort-into {root}: cannot create it ({error.strerror or error})") from error

    def folder_for(self, record: dict) -> Path:
        uncertain = self.min_confidence is not None and record["confidence"] < self.min_confidence
        return self.root / (UNCERTAIN if uncertain else folder_name(record["class"]))

    def place(self, record: dict) -> Path | None:
        """Copy or link the record's image into its class folder; the new file's path (None for a video frame)."""
        if "frame" in record:
            return None
        source, folder = Path(record["path"]), self.folder_for(record)
        try:
            folder.mkdir(exist_ok=True)
            for name in free_names(source.name):
                if self._claim(source, folder / name):
                    return folder / name
        except OSError as error:
            raise VQError(f"--sort-into: cannot put {source} into {folder} ({error.strerror or error})") from error
        raise VQError(f"--sort-into: {folder} already holds {MAX_CLASHES} files named like {source.name}")

    def _claim(self, source: Path, destination: Path) -> bool:
        """Create ``destination`` from ``source`` unless the name is taken (False then); never replaces a file."""
        if os.path.lexists(destination):
            return False
        if self.link:
            return _link(source, destination)
        tmp = temporary_path(destination)
        try:
            shutil.copy2(source, tmp)
            settle(tmp)
            install(tmp, destination, replace=False)
            return True
        except VQError:  # taken between the check and the rename
            return False
        finally:
            tmp.unlink(missing_ok=True)


def _link(source: Path, destination: Path) -> bool:
    """A hard link where the filesystem allows one (it survives the original moving), else a symlink."""
    try:
        os.link(source, destination)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        try:
            os.symlink(os.path.realpath(source), destination)
        except FileExistsError:
            return False
    return True


def free_names(name: str):
    """``name``, then ``stem_1.suffix``, ``stem_2.suffix``..."""
    stem, suffix = os.path.splitext(name)
    yield name
    for number in range(1, MAX_CLASHES):
        yield f"{stem}_{number}{suffix}"


def folder_name(class_name: str) -> str:
    """A class name usable as one folder name (no separators; never '.', '..', or the uncertain folder)."""
    name = class_name.replace(os.sep, "_").replace("/", "_").replace("\0", "_").strip()
    return f"_{name}" if name in ("", ".", "..", UNCERTAIN) else name
