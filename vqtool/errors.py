"""The one exception type for errors a user can cause, and whether the user asked to see everything."""

import contextlib
import os
import sys


class VQError(Exception):
    """A problem with the user's input or environment, shown as one line.

    ``usage=True`` marks bad arguments (exit code 2); everything else is a
    runtime failure (exit code 1).
    """

    def __init__(self, message: str, *, usage: bool = False):
        super().__init__(message)
        self.usage = usage

    @property
    def exit_code(self) -> int:
        return 2 if self.usage else 1


class VQWarning(UserWarning):
    """A warning raised where no reporter reaches (registration at import time); the CLI shows it as one line."""


def suggest(name: str, choices) -> str:
    """' (did you mean: a, b?)' for names close to ``name``, or ''."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def debug_enabled() -> bool:
    """Whether ``--debug`` (or ``VQTOOL_DEBUG=1``) asked for tracebacks and third-party libraries' own output."""
    return os.environ.get("VQTOOL_DEBUG") == "1"


def first_line(error: BaseException) -> str:
    """An exception's message reduced to its first non-empty line (or its type's name) for a one-line error.

    Libraries explain at length (torch's weights_only notes, Ultralytics' emoji
    banners); ``--debug`` shows all of it with the traceback.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def os_error_line(error: OSError) -> str:
    """A failed system call as one line: the path it was about and what the system said."""
    reason = error.strerror or first_line(error)
    paths = [path for path in (error.filename, error.filename2) if path is not None]
    return f"{' -> '.join(map(os.fsdecode, paths))}: {reason}" if paths else reason


@contextlib.contextmanager
def native_stderr_hidden():
    """Outside --debug, what C libraries print straight to file descriptor 2 during the block (libjpeg's
    "Corrupt JPEG data", libpng's and OpenCV's warnings) goes to /dev/null; vqtool reports the outcome itself.

    For short calls on the main thread: the whole process's stderr is redirected meanwhile.
    """
    if debug_enabled():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def note_interrupt(interrupt: BaseException, note: str) -> None:
    """Say, on the one line that ends an interrupted command (``Aborted: NOTE``), where it left things."""
    interrupt.vqtool_note = note


def interrupt_note(interrupt: BaseException) -> str | None:
    return getattr(interrupt, "vqtool_note", None)
