"""The root command group.

Subcommands are imported only when they run (Click's LazyGroup pattern), so
``vqtool --help`` and shell completion never import torch. SIGTERM (what cron,
systemd, Kubernetes and CI runners send) unwinds the command as Ctrl-C does, so
files being written are cleaned up and a run folder keeps its last epoch;
the exit code is 143 (128 + SIGTERM), 130 for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
import traceback
import warnings

import click

from vqtool import __version__
from vqtool.commands import StdoutClosed, debug_option
from vqtool.commands.completion import register_shell_completion
from vqtool.errors import VQError, VQWarning, debug_enabled, first_line, interrupt_note, os_error_line

# name -> "module:attribute"; a new subcommand is one line here and one module.
COMMANDS = {
    "train": "vqtool.commands.train:train",
    "finetune": "vqtool.commands.finetune:finetune",
    "eval": "vqtool.commands.evaluate:evaluate",
    "confusion": "vqtool.commands.confusion:confusion",
    "detect": "vqtool.commands.detect:detect",
    "predict": "vqtool.commands.predict:predict",
    "export": "vqtool.commands.export:export",
    "benchmark": "vqtool.commands.benchmark:benchmark",
    "conv": "vqtool.commands.conv:conv",
    "models": "vqtool.commands.listing:models",
    "datasets": "vqtool.commands.listing:datasets",
    "plugins": "vqtool.commands.listing:plugins",
    "cache": "vqtool.commands.cache:cache",
    "runs": "vqtool.commands.runs:runs",
    "tune": "vqtool.commands.tune:tune",
    "inspect": "vqtool.commands.inspect:inspect",
}


register_shell_completion()


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler wherever the command is, so that it unwinds like Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_unwinds():
    """SIGTERM raises Terminated while the command runs (signal handlers can be set from the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def plugin_commands() -> dict:
    """name -> entry point of the subcommands plugins add (entry point group ``vqtool.commands``, each naming a
    Click command; allowed by VQTOOL_PLUGINS as other plugins are); a built-in's name stays the built-in's."""
    from vqtool.catalog import ENTRY_POINT_GROUPS, allowed_entry_points

    return {entry_point.name: entry_point for _, entry_point in allowed_entry_points(ENTRY_POINT_GROUPS["commands"])
            if entry_point.name not in COMMANDS}


class LazyGroup(click.Group):
    """Imports a subcommand's module on first use and turns VQError into one line."""

    def list_commands(self, ctx):
        return sorted({*COMMANDS, *plugin_commands()})

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return _plugin_command(name)
        module_name, attribute = target.split(":")
        try:  # a broken entry is a broken install: say so rather than hide the command
            command = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise click.ClickException(f"the {name} command cannot be loaded from {target} ({error})") from error
        if not isinstance(command, click.Command):
            raise click.ClickException(f"the {name} command's entry {target} is not a Click command")
        return command

    def make_context(self, info_name, args, parent=None, **extra):
        """The root group's own options (``vqtool --bogus``) fail in one line too, as a subcommand's do."""
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as error:
            click.echo(f"Error: {_usage_message(error)} (see '{info_name} --help')", err=True)
            sys.exit(2)

    def invoke(self, ctx):
        try:
            with sigterm_unwinds():
                return super().invoke(ctx)
        except click.UsageError as error:  # Click's own checks (option types, missing arguments): one line too
            where = error.ctx.command_path if error.ctx else "vqtool"
            _fail(ctx, f"{_usage_message(error)} (see '{where} --help')", 2)
        except VQError as error:  # one line even when a library's text slipped into the message
            _fail(ctx, first_line(error), error.exit_code)
        except OSError as error:  # a file or folder the library did not expect to fail (a last resort: one line)
            _fail(ctx, os_error_line(error), 1)
        except StdoutClosed:  # `vqtool ... | head -1`: the reader has what it wanted, as with any Unix filter
            _silence_stdout()
            ctx.exit(0)
        except KeyboardInterrupt as interrupt:
            if debug_enabled():
                raise
            terminated = isinstance(interrupt, Terminated)
            word, note = "Terminated" if terminated else "Aborted", interrupt_note(interrupt)
            click.echo(f"{word}: {note}" if note else f"{word}.", err=True)  # one line, as errors are
            ctx.exit(143 if terminated else 130)


def _plugin_command(name: str) -> click.Command | None:
    entry_point = plugin_commands().get(name)
    if entry_point is None:
        return None
    try:  # a plugin that fails to load is named, not hidden (vqtool plugins --check says more)
        command = entry_point.load()
    except Exception as error:
        raise click.ClickException(f"the {name} command of a plugin cannot be loaded from {entry_point.value} "
                                   f"({type(error).__name__}: {error})") from error
    if not isinstance(command, click.Command):
        raise click.ClickException(f"the {name} command's entry point {entry_point.value} is not a Click command")
    return command


def _usage_message(error: click.UsageError) -> str:
    """Click's message; for an unknown option, only options spelled like it are suggested. Click compares the
    names with their dashes, so any two options share `--` and `--bogus` got `--log, --out`."""
    if not isinstance(error, click.NoSuchOption):
        return error.format_message()
    import difflib

    options = {option.lstrip("-"): option for param in (error.ctx.command.params if error.ctx else ())
               for option in (*param.opts, *param.secondary_opts) if option.startswith("--")}
    close = difflib.get_close_matches(error.option_name.lstrip("-"), list(options), n=3, cutoff=0.75)
    suggestion = f" (did you mean: {', '.join(options[name] for name in close)}?)" if close else ""
    return f"No such option: {error.option_name}{suggestion}"


def _fail(ctx, message: str, exit_code: int):
    """One ``Error:`` line and the exit code; --debug prints the traceback first and keeps the exit code."""
    if debug_enabled():
        traceback.print_exc()
    click.echo(f"Error: {message}", err=True)
    ctx.exit(exit_code)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what the closed pipe refused says nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _keep_standard_streams_open() -> None:
    """A stdout or stderr closed by the caller (``>&-``) becomes /dev/null: otherwise the next file opened gets
    its number, and whatever writes to the stream (C libraries included) writes into that file."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
            setattr(sys, name, open(fd, "w", closefd=False))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vqtool")
@debug_option
def cli():
    """Train, fine-tune, inspect, evaluate, detect and export vision models.

    \b
    Examples:
      vqtool train                      # small CNN on the embedded digits set
      vqtool train ./photos --model resnet18 --epochs 5
      vqtool eval runs/train-20261123-101500
    """


def _show_vqtool_warnings() -> None:
    """vqtool's own warnings (VQWarning) as one ``Warning: ...`` line; other warnings as Python shows them."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, VQWarning):
            click.echo(f"Warning: {message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main():
    _keep_standard_streams_open()
    _show_vqtool_warnings()
    cli(prog_name="vqtool")


if __name__ == "__main__":
    sys.exit(main())
