"""How every file vqtool writes gets there: whole or not at all, never over what it must not; and JSON read back.

Every file is first written under a temporary name beside its destination
(``.NAME.<pid>-<random>.tmp<suffix>``: hidden, and with the destination's suffix
for writers that choose the format by it), flushed, then renamed into place;
a failure (a full disk, a permission error, Ctrl-C) removes the temporary file,
so no truncated file is ever left under a real name. ``replace=False`` installs
it only where nothing exists yet (a hard link, which fails on an existing name),
so a file that appeared meanwhile is never overwritten either.

Files get the permissions the umask allows, as ``open()`` would give them,
whatever the library that wrote them chose (safetensors and
``tempfile.mkstemp`` make them 0600, which another user or a CI job cannot read).
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
from pathlib import Path

from vqtool.errors import VQError, first_line
from vqtool.files import read_text

TEMP_MARK = ".tmp"  # in every temporary file's name: .model.json.123-ab12.tmp.json


TEMP_MARK = ".tmp"  # in every temporary file's name: .model.json.123-ab12.tmp.json


def umask() -> int:
    """The process's umask, read without changing it where the system tells it (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_path(path: Path) -> Path:
    """A fresh hidden name beside ``path`` that keeps its suffix."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}{TEMP_MARK}{path.suffix}")


def atomic_save(path: Path, save, *, replace: bool = True) -> None:
    """``save(temporary_path)`` writes the file, which is then renamed to ``path``.

    ``replace=False``: VQError if ``path`` exists (checked again at the rename). An OSError while saving (disk
    full, no permission) becomes a one-line VQError; the temporary file is removed whatever happens.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        save(str(tmp))
        settle(tmp)
        install(tmp, path, replace=replace)
    except Exception as error:
        reason = write_failure(error, path.parent)
        if reason is None:
            raise
        raise VQError(f"{path}: cannot write it ({reason})") from error
    finally:
        if os.path.lexists(tmp):  # unlink fails on a read-only filesystem even when there is nothing to remove
            tmp.unlink()


FULL_BELOW = 1 << 20  # bytes free under which a filesystem whose write just failed counts as full


def write_failure(error: BaseException, folder) -> str | None:
    """Why writing into ``folder`` failed, in a few words, when ``error`` is a failed write; None otherwise.

    An OSError says it (a full disk, no permission). Writers in C++ do not: torch's zip writer raises
    "enforce fail at inline_container.cc ... unexpected pos", exporters wrap it in their own errors. So the
    filesystem is asked (before the partial file is removed) whether it is full.
    """
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    try:
        usage = os.statvfs(folder)
        if usage.f_bavail * usage.f_frsize < FULL_BELOW:
            return os.strerror(errno.ENOSPC)
    except OSError:
        pass
    if isinstance(error, OSError) or "inline_container" in str(error):
        return first_line(error)
    return None


def atomic_write(path: Path, data: bytes | str, *, replace: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_save`)."""
    payload = data.encode() if isinstance(data, str) else data
    atomic_save(path, lambda tmp: Path(tmp).write_bytes(payload), replace=replace)


def settle(path: Path) -> None:
    """Give a freshly written file the umask's permissions and put it on disk, before a rename names it: the
    name never points at data still in the page cache (a power cut would leave an empty file)."""
    path = Path(path)
    if not path.is_file():  # some exporters write folders
        return
    os.chmod(path, 0o666 & ~umask())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install(tmp: Path, path: Path, *, replace: bool = True) -> None:
    """Rename ``tmp`` to ``path``; with ``replace=False`` only where no file of that name exists."""
    if replace:
        os.replace(tmp, path)
        return
    if os.path.lexists(path):
        raise VQError(f"{path} already exists; vqtool does not replace it (pass --overwrite to allow it)",
                      usage=True)
    try:
        os.link(tmp, path)  # fails if the name was taken meanwhile: no file is ever replaced
    except FileExistsError as error:
        raise VQError(f"{path} already exists; vqtool does not replace it (pass --overwrite to allow it)",
                      usage=True) from error
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        os.replace(tmp, path)  # a filesystem without hard links: the check above is all there is
    else:
        tmp.unlink()


def finite(document):
    """``document`` with NaN and infinities replaced by None: strict JSON parsers reject them."""
    if isinstance(document, float) and not math.isfinite(document):
        return None
    if isinstance(document, dict):
        return {key: finite(value) for key, value in document.items()}
    if isinstance(document, (list, tuple)):
        return [finite(value) for value in document]
    return document


def json_text(document) -> str:
    return json.dumps(finite(document), indent=2, default=str, allow_nan=False) + "\n"


def write_json(path: Path, document) -> None:
    atomic_write(path, json_text(document))


def read_json(path: Path) -> dict:
    try:
        return json.loads(read_text(path))
    except (OSError, ValueError, RecursionError) as error:  # ValueError: not UTF-8, or not JSON
        reason = error.strerror if isinstance(error, OSError) and error.strerror else first_line(error)
        raise VQError(f"{path}: cannot read ({reason})") from error
