"""The store: decoded pixels (and frozen-backbone features) in files on disk, shared by runs, commands and processes.

The first time a split is needed at a preprocessing, each image is decoded once
into its row of a uint8 file, from which batches are then read
(:class:`~vqtool.data.rows.StoredRows`); any later command on the same files
at the same preprocessing reads it and decodes nothing. An entry lives in
``$VQTOOL_CACHE_DIR`` (default ``~/.cache/vqtool``) under ``pixels/<key>/`` or
``features/<key>/`` (and inspect's out-of-fold probabilities under
``probabilities/<key>/``), the key a hash of what its contents depend on (the files'
paths, sizes and modification times and the preprocessing; for features also
the weights and the views), and holds:

    data.bin        the array: one row per listed file (the rows of unreadable files stay zero)
    progress.json   while building: the rows done so far, the unreadable files found among them
    index.json      once complete (its presence is what "complete" means): shape, dtype, the rows kept,
                    the unreadable files and why, what the data is, the SHA-256 of data.bin and of the index
                    itself; its modification time is the last use

An entry is used only once both checksums and the index's own shape agree (a
damaged or edited entry is decoded again, with a warning): stored pixels are
never trusted blindly. Only folders named by a key are entries, and links are
never followed: `cache clear` removes nothing else.

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
import itertools
import json
import math
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqtool.data.images import decode_into, decoding_pool, max_image_pixels
from vqtool.data.locations import CACHE_ENV, cache_dir as cache_root
from vqtool.data.rows import StoredRows
from vqtool.errors import VQError, first_line
from vqtool.files import MB, is_real_folder, open_regular, read_text
from vqtool.reporter import Reporter

FORMAT_VERSION = 2  # bump when what a key stands for, or how pixels are decoded, changes
KINDS = ("pixels", "features", "probabilities")  # probabilities: inspect's out-of-fold label-head output
CHUNK_BYTES = 64 * 1024**2  # decoded between two progress records
DATA_FILE, INDEX_FILE, PROGRESS_FILE = "data.bin", "index.json", "progress.json"


KEY_LENGTH = 32
INDEX_LIMIT = 1024 * MB  # the index lists every row: tens of millions of them fit
DTYPES = ("uint8", "float16", "float32", "float64", "int64")
CLOCK_TICK_NS = 2_000_000_000  # more than a file system's timestamp tick (jiffies; 2 s on FAT)


def is_key(name: str) -> bool:
    return len(name) == KEY_LENGTH and all(c in "0123456789abcdef" for c in name)


@contextlib.contextmanager
def store_errors():
    """A failure to write the store (a cache folder that is a file, unwritable, full) as one line that says
    how to go on without it."""
    try:
        yield
    except OSError as error:
        where = os.fsdecode(error.filename) if error.filename else str(cache_root())
        raise VQError(f"the store ({CACHE_ENV}={cache_root()}) cannot be written: {where}: "
                      f"{error.strerror or error}; point {CACHE_ENV} at a writable folder, or pass "
                      f"--no-cache-store") from error


@dataclass
class Entry:
    """One stored array: ``<cache>/<kind>/<key>/``."""

    kind: str
    key: str
    damage: str | None = None  # why index() found the entry unusable

    @property
    def folder(self) -> Path:
        return cache_root() / self.kind / self.key

    @property
    def data(self) -> Path:
        return self.folder / DATA_FILE

    def index(self, checksum: bool = True) -> dict | None:
        """The complete entry's index, verified (None while it is not complete, or when it is damaged:
        ``damage`` then says how). ``checksum=False`` skips reading all of data.bin (listing the store)."""
        self.damage = None
        try:
            document = json.loads(read_text(self.folder / INDEX_FILE, INDEX_LIMIT))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError, RecursionError) as error:
            self.damage = f"unreadable index ({first_line(error)})"
            return None
        self.damage = _index_problem(document) or self._data_problem(document, checksum)
        return None if self.damage else document

    def _data_problem(self, index: dict, checksum: bool) -> str | None:
        expected = math.prod(index["shape"]) * np.dtype(index["dtype"]).itemsize
        try:
            if not stat.S_ISREG(os.lstat(self.data).st_mode):
                return f"{DATA_FILE} is not a regular file"
            size = os.path.getsize(self.data)
            if size < expected:
                return f"{DATA_FILE} holds {size} bytes, {expected} expected"
            if checksum and not _unchanged(self.data, index.get("data_stat")) \
                    and file_digest(self.data) != index["data_sha256"]:
                return f"{DATA_FILE} does not match its checksum"
        except OSError as error:
            return f"{DATA_FILE} unreadable ({error.strerror or error})"
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
        if os.path.islink(self.folder):  # an entry is a folder of the store's own, never written through a link
            os.unlink(self.folder)
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
        self.data.unlink(missing_ok=True)  # a fresh file: never write through a link left in its place
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
            document = json.loads(read_text(self.folder / PROGRESS_FILE, INDEX_LIMIT))
        except (OSError, ValueError, RecursionError):
            return None
        return document if isinstance(document, dict) and _progress_problem(document) is None else None

    def record(self, name: str, document: dict) -> None:
        """progress.json or index.json replaced as a whole (a reader sees the old one or the new one)."""
        temporary = self.folder / f".{name}.tmp"
        with open(temporary, "w") as file:
            json.dump(document, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.folder / name)

    def complete(self, index: dict) -> None:
        index = {**index, "data_sha256": file_digest(self.data), "data_stat": _written_stat(self.data)}
        self.record(INDEX_FILE, {**index, "index_sha256": _index_digest(index)})
        with contextlib.suppress(FileNotFoundError):
            (self.folder / PROGRESS_FILE).unlink()


def _written_stat(path: Path) -> list[int]:
    """data.bin's size, inode and change time: while they are as the entry recorded them, the file is not hashed
    again on every use (seconds per GB); a file written or replaced since (random bytes, another entry's data) is.
    The change time, unlike the modification time, cannot be set back by hand."""
    status = os.stat(path)
    return [status.st_size, status.st_ino, status.st_ctime_ns]


def _unchanged(path: Path, recorded) -> bool:
    """Whether data.bin is as its entry recorded it: the same size, inode and change time, that time at least
    CLOCK_TICK_NS ago (file systems keep time in coarse ticks: a write in the same tick would keep it)."""
    now = _written_stat(path)
    return now == recorded and time.time_ns() - now[2] > CLOCK_TICK_NS


def file_digest(path: Path) -> str:
    with open_regular(path, limit=1 << 62) as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _index_digest(index: dict) -> str:
    content = {key: value for key, value in index.items() if key != "index_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _index_problem(index) -> str | None:
    """What makes ``index`` unusable as a complete entry's index (its checksum first: an edited index is
    refused whatever it says), or None."""
    if not isinstance(index, dict) or not isinstance(index.get("index_sha256"), str):
        return "an index without its checksum"
    if index["index_sha256"] != _index_digest(index):
        return "an index that does not match its checksum"
    shape, kept = index.get("shape"), index.get("kept")
    if not (isinstance(shape, list) and shape and all(type(n) is int and n >= 0 for n in shape)):
        return "an index without a valid shape"
    if index.get("dtype") not in DTYPES or not isinstance(index.get("data_sha256"), str):
        return "an index without a valid dtype or data checksum"
    if kept is not None and not (isinstance(kept, list) and all(type(i) is int for i in kept)
                                 and kept == sorted(set(kept)) and all(0 <= i < shape[0] for i in kept)):
        return "an index whose kept rows are not distinct rows of the array"
    if not isinstance(index.get("bad", {}), dict):
        return "an index whose unreadable files are not a mapping"
    return None


def _progress_problem(progress: dict) -> str | None:
    shape, done, bad = progress.get("shape"), progress.get("done"), progress.get("bad")
    if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape) and shape):
        return "shape"
    if not (type(done) is int and 0 <= done <= shape[0] and isinstance(bad, dict)):
        return "rows"
    return None


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
            digest.update(os.fsencode(path) + f"\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
        except OSError:  # a missing file is part of the key too: decoding reports it
            digest.update(os.fsencode(path) + b"\0missing\n")
    return digest.hexdigest()[:32]


def stored_pixels(files: list[str], labels: torch.Tensor, size: int, channels: int, resize: int | None,
                  interpolation: str, *, workers: int | None, reporter: Reporter, what: str):
    """(stored pixels of the readable files, their positions, {bad path: reason}), decoded at most once."""
    entry = Entry("pixels", pixel_key(files, size, channels, resize, interpolation))
    index = entry.index()
    if index is None:
        if entry.damage:
            reporter.warn(f"store: {entry.folder} is damaged ({entry.damage}); decoding {what} again")
        with store_errors(), entry.locked(reporter, f"decoding {what}"):
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


def _write_at(file, rows: np.ndarray, offset: int, durable: bool = True) -> None:
    """``rows`` written at ``offset`` (and made durable, with ``durable``); the space was reserved, so this does not
    run out of it."""
    view = memoryview(rows).cast("B")
    while view:
        written = os.pwrite(file.fileno(), view, offset)
        view, offset = view[written:], offset + written
    if durable:
        os.fsync(file.fileno())


def _common_folder(files: list[str]) -> str:
    try:
        return os.path.commonpath([os.path.abspath(path) for path in files]) if files else ""
    except ValueError:  # paths on different drives
        return ""


# --- arrays computed elsewhere (frozen-backbone features) --------------------------------------------


def save_array(entry: Entry, array: torch.Tensor, index: dict, reporter: Reporter, what: str) -> None:
    """Store ``array`` (N×..., on the CPU) as ``entry``, unless another process did meanwhile."""
    row_bytes = max(1, array[0].numel() * array.element_size()) if len(array) else 1
    save_rows(entry, array.split(max(1, CHUNK_BYTES // row_bytes)), len(array), index, reporter, what)


def save_rows(entry: Entry, blocks, rows: int, index: dict, reporter: Reporter, what: str) -> dict:
    """Store the row blocks (CPU tensors of one dtype and row shape) of a ``rows``-row array as ``entry``, each
    written as it comes, so that the array is never whole in memory; the entry's index. ``blocks`` is not drawn
    from when another process stored the entry meanwhile."""
    with store_errors(), entry.locked(reporter, f"storing {what}"):
        if (done := entry.index()) is not None:
            return done
        blocks = iter(blocks)
        first = next(blocks)
        row_bytes = max(1, first[0].numel() * first.element_size()) if len(first) else 1
        entry.reserve(rows * row_bytes)
        offset = 0
        with open(entry.data, "r+b") as file:
            for block in itertools.chain([first], blocks):
                _write_at(file, block.contiguous().numpy(), offset, durable=False)
                offset += len(block) * row_bytes
            os.fsync(file.fileno())
        if offset != rows * row_bytes:
            raise VQError(f"storing {what}: {offset // row_bytes} rows computed, {rows} expected")
        index = {**index, "format": FORMAT_VERSION, "dtype": str(first.numpy().dtype), "shape": [rows, *first.shape[1:]],
                 "created": time.time(), "what": what}
        entry.complete(index)
        return index


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
    """Every entry of the store, complete or not: kind, key, folder, bytes, last use, what it holds.

    Only folders named by a key, in kind folders that are themselves folders: what else the cache folder holds
    (a user's folder, a link to elsewhere) is no entry, and is never listed or cleared.
    """
    found = []
    for kind in KINDS:
        kind_folder = cache_root() / kind
        if not is_real_folder(kind_folder):
            continue
        with contextlib.suppress(OSError):
            for folder in sorted(kind_folder.iterdir()):
                if is_key(folder.name) and is_real_folder(folder):
                    found.append(_describe(Entry(kind, folder.name)))
    return found


def _describe(entry: Entry) -> dict:
    index = entry.index(checksum=False)
    size, newest = 0, 0.0
    with contextlib.suppress(OSError):
        for path in entry.folder.iterdir():
            status = os.lstat(path)
            if stat.S_ISREG(status.st_mode):
                size += status.st_size
                newest = max(newest, status.st_mtime)
    used = os.lstat(entry.folder / INDEX_FILE).st_mtime if index else newest or os.lstat(entry.folder).st_mtime
    described = {"kind": entry.kind, "key": entry.key, "path": str(entry.folder), "bytes": size,
                 "complete": index is not None, "last_used": used}
    if entry.damage:
        described["damaged"] = entry.damage
    if index:
        described.update(data=index.get("data"), what=index.get("what"), shape=index.get("shape"),
                         rows=len(index.get("kept") or ()) or index["shape"][0],
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
