"""Reading a file the user named: only a regular file, and only up to a size.

Every reader of user files goes through :func:`open_regular`. A path may name
a FIFO (``open()`` blocks until a writer comes, which may be never), a
character device (``/dev/zero`` never ends, ``/dev/tty`` waits for a key), a
socket or a folder; and a regular file may be far larger than anything vqtool
reads whole (a JSON list of class weights is bytes, not gigabytes). The file is
opened without blocking, checked with ``fstat`` on the descriptor itself (so it
cannot be swapped between the check and the read), and refused with an
OSError naming the path, which the callers already turn into their one line.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

MB = 1024**2
TEXT_LIMIT = 64 * MB  # a JSON, YAML or CSV document read whole: lists of millions of rows fit
IMAGE_LIMIT = 1024 * MB  # one image file; the pixel count is limited separately (decompression bombs)


class NotRegularFile(OSError):
    """The path names a FIFO, device, socket or folder, or a file over the size limit: not read."""


def open_regular(path, limit: int = TEXT_LIMIT):
    """A binary file object for ``path`` if it is a regular file of at most ``limit`` bytes; NotRegularFile
    (an OSError) otherwise."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({_kind(status.st_mode)})", os.fspath(path))
        if status.st_size > limit:
            raise NotRegularFile(errno.EFBIG, f"{status.st_size / MB:.0f} MB, over the limit of {limit // MB} MB "
                                              f"for this kind of file", os.fspath(path))
        flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
        fcntl.fcntl(descriptor, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_bytes(path, limit: int = TEXT_LIMIT) -> bytes:
    """The whole regular file ``path`` (see :func:`open_regular`); a file grown past ``limit`` is refused too."""
    with open_regular(path, limit) as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise NotRegularFile(errno.EFBIG, f"over the limit of {limit // MB} MB for this kind of file",
                             os.fspath(path))
    return data


def read_text(path, limit: int = TEXT_LIMIT, encoding: str = "utf-8") -> str:
    """The regular file ``path`` decoded; UnicodeDecodeError (a ValueError) for bytes that are not text."""
    return read_bytes(path, limit).decode(encoding)


def is_real_folder(path) -> bool:
    """A folder, and not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"
