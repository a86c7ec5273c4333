"""The store: decoded pixels (and frozen-backbone features) in files on disk, shared by runs, commands and processes.

The first time a split is needed at a preprocessing, each image is decoded once
into its row of a uint8 file, from which batches are then read
(:class:`~vqtool.data.rows.StoredRows`); any later command on the same files
at the same preprocessing reads it and decodes nothing. An entry lives in
``$VQTOOL_CACHE_DIR`` (default ``~/.cache/vqtool``) under ``pixels/<key>/`` or
``features/<key>/``, the key a hash of what its contents depend on (the files'
paths, sizes and modification times and the preprocessing; for features also
the weights and the views), and holds:

    data.bin        the array: one row per listed file (the rows of unreadable files stay zero)
    progress.json   while building: the rows done so far, the unreadable files found among them
    index.json      once complete (its presence is what "complete" means): shape, dtype, the rows kept,
                    the unreadable files and why, what the data is; its modification time is the last use

Building takes ``<key>.lock`` (a file lock), so of several processes (or the
ranks of one torchrun) one builds and the others wait, then read it. It is
written in chunks, each made durable before progress.json says so: a build
killed part-way continues from its last complete chunk. The space is reserved
before the first image is decoded, so a full disk is one error, not a crash.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqtool.data.images import decode_into, decoding_pool, max_image_pixels
from vqtool.data.locations import CACHE_ENV, cache_dir as cache_root
from vqtool.data.rows import StoredRows
from vqtool.errors import VQError
from vqtool.reporter import Reporter

FORMAT_VERSION = 1  # bump when what a key stands for, or how pixels are decoded, changes
KINDS = ("pixels", "features")
CHUNK_BYTES = 64 * 1024**2  # decoded between two progress records
DATA_FILE, INDEX_FILE, PROGRESS_FILE = "data.bin", "index.json", "progress.json"


@dataclass
class Entry:
    """One stored array: ``<cache>/<kind>/<key>/``."""

    kind: str
    key: str

    @property
    def folder(self) -> Path:
        return cache_root() / self.kind / self.key

    @property
    def data(self) -> Path:
        return self.folder / DATA_FILE

    def index(self) -> dict | None:
        """The complete entry's index (None while it is not complete)."""
        try:
            return json.loads((self.folder / INDEX_FILE).read_text())
        except (OSError, ValueError):
            return None

    def open(self, index: dict, rows: torch.Tensor | None = None) -> StoredRows:
        """The stored array, to read rows from; marks the entry used now (what `cache clear --older-than` goes by)."""
        with contextlib.suppress(OSError):
            os.utime(self.folder / INDEX_FILE)
        return StoredRows.open(str(self.data), index["dtype"], tuple(index["shape"]), rows)

    @contextlib.contextmanager
    def locked(self, reporter: Reporter, what: str):
        """Held while this process builds the entry; waits (saying so) while another process does."""
        from filelock import FileLock, Timeout

        self.folder.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.folder.parent / f"{self.key}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            reporter.log(f"store: waiting for another process to finish {what}")
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def reserve(self, nbytes: int) -> None:
        """The data file at its full size, its blocks allocated: a full disk stops the build here, in one line."""
        self.folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.folder).free
        if free < nbytes:
            raise _full_disk(self.folder, nbytes, free)
        with open(self.data, "wb") as file:
            try:
                os.posix_fallocate(file.fileno(), 0, max(nbytes, 1))
            except OSError as error:
                if error.errno == errno.ENOSPC:
                    raise _full_disk(self.folder, nbytes, shutil.disk_usage(self.folder).free) from error
                file.truncate(max(nbytes, 1))  # a file system without fallocate: the free space was checked

    def progress(self) -> dict | None:
        try:
            return json.loads((self.folder / PROGRESS_FILE).read_text())
        except (OSError, ValueError):
            return None

    def record(self, name: str, document: dict) -> None:
        """progress.json or index.json replaced as a whole (a reader sees the old one or the new one)."""
        temporary = self.folder / f".{name}.tmp"
        with open(temporary, "w") as file:
            json.dump(document, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.folder / name)

    def complete(self, index: dict) -> None:
        self.record(INDEX_FILE, index)
        with contextlib.suppress(FileNotFoundError):
            (self.folder / PROGRESS_FILE).unlink()


def _full_disk(folder: Path, needed: int, free: int) -> VQError:
    return VQError(f"the store needs {needed / 1e9:.2f} GB in {folder.parent} but {free / 1e9:.2f} GB are free; "
                   f"free some space, point {CACHE_ENV} elsewhere, or pass --no-cache-store")


# --- decoded pixels -------------------------------------------------------------------------------


def pixel_key(files: list[str], size: int, channels: int, resize: int | None, interpolation: str) -> str:
    """What a split's decoded pixels depend on: the files (path, size, modification time) and the preprocessing."""
    digest = hashlib.sha256(json.dumps({
        "format": FORMAT_VERSION, "size": size, "channels": channels, "resize": resize,
        "interpolation": interpolation, "max_pixels": max_image_pixels()}).encode())
    for path in files:
        path = os.path.abspath(path)
        try:
            status = os.stat(path)
            digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
        except OSError:  # a missing file is part of the key too: decoding reports it
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()[:32]


def stored_pixels(files: list[str], labels: torch.Tensor, size: int, channels: int, resize: int | None,
                  interpolation: str, *, workers: int | None, reporter: Reporter, what: str):
    """(stored pixels of the readable files, their positions, {bad path: reason}), decoded at most once."""
    entry = Entry("pixels", pixel_key(files, size, channels, resize, interpolation))
    index = entry.index()
    if index is None:
        with entry.locked(reporter, f"decoding {what}"):
            index = entry.index() or _build(entry, files, labels, (len(files), channels, size, size),
                                            (resize, interpolation), workers, reporter, what)
    else:
        reporter.log(f"store: {what} read from {entry.folder} ({len(index['kept'])} images, nothing decoded)")
    kept = torch.tensor(index["kept"], dtype=torch.long)
    bad = {files[int(position)]: reason for position, reason in index["bad"].items()}
    return entry.open(index, kept), kept, bad


def _build(entry: Entry, files, labels, shape, recipe, workers, reporter, what) -> dict:
    """Decode the files into the entry, chunk by chunk, continuing a killed build; its index."""
    image_bytes = int(np.prod(shape[1:]))
    progress = entry.progress() if entry.data.is_file() else None
    if progress is None or progress.get("shape") != list(shape):
        progress = {"shape": list(shape), "done": 0, "bad": {}}
        entry.reserve(len(files) * image_bytes)
    start, bad = progress["done"], {int(k): v for k, v in progress["bad"].items()}
    if start:
        reporter.log(f"store: continuing an interrupted decoding of {what} at image {start + 1} of {len(files)}")
    chunk, started = max(1, CHUNK_BYTES // image_bytes), time.perf_counter()
    buffer = np.empty((min(chunk, len(files)), *shape[1:]), dtype=np.uint8)  # one chunk in memory, reused
    with open(entry.data, "r+b") as file, decoding_pool(workers) as pool, \
            reporter.progress(f"decoding {what}", len(files) - start) as advance:
        for begin in range(start, len(files), chunk):
            stop = min(len(files), begin + chunk)
            rows = buffer[:stop - begin]
            found = decode_into(pool, files[begin:stop], rows, shape[2], shape[1], *recipe)
            for position in found:
                rows[position] = 0  # an unreadable file's row: zeros, never kept
            _write_at(file, rows, begin * image_bytes)
            bad.update({begin + i: reason for i, reason in found.items()})
            entry.record(PROGRESS_FILE, {"shape": list(shape), "done": stop, "bad": bad})  # after the rows are durable
            advance(stop - begin)
    seconds = time.perf_counter() - started
    reporter.log(f"store: decoded {len(files) - start} images of {what} into {entry.folder} "
                 f"({len(files) * image_bytes / 1e6:.1f} MB, {(len(files) - start) / max(seconds, 1e-9):.0f} images/s)")
    index = {"kind": "pixels", "format": FORMAT_VERSION, "dtype": "uint8", "shape": list(shape),
             "kept": [i for i in range(len(files)) if i not in bad], "bad": {str(k): v for k, v in sorted(bad.items())},
             "labels": labels.tolist(), "data": _common_folder(files), "what": what,
             "preprocess": {"size": shape[2], "channels": shape[1], "resize": recipe[0], "interpolation": recipe[1]},
             "created": time.time(), "decoded": {"pid": os.getpid(), "images": len(files) - start, "resumed_at": start}}
    entry.complete(index)
    return index


def _write_at(file, rows: np.ndarray, offset: int) -> None:
    """``rows`` written at ``offset`` and made durable (the space was reserved, so this does not run out of it)."""
    view = memoryview(rows).cast("B")
    while view:
        written = os.pwrite(file.fileno(), view, offset)
        view, offset = view[written:], offset + written
    os.fsync(file.fileno())


def _common_folder(files: list[str]) -> str:
    try:
        return os.path.commonpath([os.path.abspath(path) for path in files]) if files else ""
    except ValueError:  # paths on different drives
        return ""


# --- arrays computed elsewhere (frozen-backbone features) --------------------------------------------


def save_array(entry: Entry, array: torch.Tensor, index: dict, reporter: Reporter, what: str) -> None:
    """Store ``array`` (N×..., on the CPU) as ``entry``, unless another process did meanwhile."""
    with entry.locked(reporter, f"storing {what}"):
        if entry.index() is not None:
            return
        row_bytes = max(1, array[0].numel() * array.element_size()) if len(array) else 1
        entry.reserve(len(array) * row_bytes)
        with open(entry.data, "r+b") as file:
            for chunk in array.split(max(1, CHUNK_BYTES // row_bytes)):
                file.write(chunk.contiguous().numpy().tobytes())
            file.flush()
            os.fsync(file.fileno())
        entry.complete({**index, "format": FORMAT_VERSION, "dtype": str(array.numpy().dtype),
                        "shape": list(array.shape), "created": time.time(), "what": what})


def remembered(pixels, name: str, compute):
    """``compute(pixels)`` (a JSON-able value), kept beside the store entry that stored ``pixels`` come from, so that
    the next run on the same rows reads it instead (the pixel statistics of a training split, for example)."""
    if not isinstance(pixels, StoredRows):
        return compute(pixels)
    path = Path(pixels.source).parent / f"{name}-{content_key(pixels)[:16]}.json"
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    value = compute(pixels)
    with contextlib.suppress(OSError):  # a read-only store still trains
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(value))
        os.replace(temporary, path)
    return value


def content_key(pixels) -> str:
    """What identifies a split's pixels: the store entry and rows they are read from, or their bytes."""
    if isinstance(pixels, StoredRows):
        rows = pixels.rows if pixels.rows is not None else torch.arange(len(pixels))
        return hashlib.sha256(pixels.source.encode() + rows.numpy().tobytes()).hexdigest()
    return hashlib.sha256(pixels.contiguous().numpy().tobytes()).hexdigest()


# --- listing and clearing -------------------------------------------------------------------------


def entries() -> list[dict]:
    """Every entry of the store, complete or not: kind, key, folder, bytes, last use, what it holds."""
    found = []
    for kind in KINDS:
        with contextlib.suppress(FileNotFoundError):
            for folder in sorted((cache_root() / kind).iterdir()):
                if folder.is_dir():
                    found.append(_describe(Entry(kind, folder.name)))
    return found


def _describe(entry: Entry) -> dict:
    index = entry.index()
    size = sum(path.stat().st_size for path in entry.folder.iterdir() if path.is_file())
    used = (entry.folder / INDEX_FILE) if index else entry.folder
    described = {"kind": entry.kind, "key": entry.key, "path": str(entry.folder), "bytes": size,
                 "complete": index is not None, "last_used": used.stat().st_mtime}
    if index:
        described.update(data=index.get("data"), what=index.get("what"), shape=index.get("shape"),
                         rows=len(index.get("kept", ())) or (index.get("shape") or [0])[0],
                         preprocess=index.get("preprocess"))
    return described


def clear(older_than_days: float | None = None) -> list[dict]:
    """Remove entries (those unused for ``older_than_days``, or all); those being built are left. What went."""
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    removed = []
    for described in entries():
        if cutoff is not None and described["last_used"] >= cutoff:
            continue
        entry = Entry(described["kind"], described["key"])
        if _remove_unlocked(entry):
            removed.append(described)
    return removed


def _remove_unlocked(entry: Entry) -> bool:
    from filelock import FileLock, Timeout

    lock = FileLock(str(entry.folder.parent / f"{entry.key}.lock"))  # kept: a waiter may hold it open
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False  # another process is building it right now
    try:
        shutil.rmtree(entry.folder, ignore_errors=True)
    finally:
        lock.release()
    return True
