"""The one exception type for errors a user can cause, and whether the user asked to see everything."""

import os


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
