"""One thin module per subcommand: parse options, call the library, print."""

from __future__ import annotations

import click


def data_options(command):
    """Options every dataset source understands; passes ``data: DataOptions`` (with ``--seed``)."""
    from functools import wraps

    @click.option("--data-dir", type=click.Path(file_okay=False), envvar="VQTOOL_DATA_DIR",
                  help="Where the classics' files are, or are downloaded to.  [env: VQTOOL_DATA_DIR]")
    @click.option("--val-split", type=click.FloatRange(0, 1, max_open=True), default=None,
                  help="Fraction held out for validation when the data has no val split "
                       "(default 0.2 for one tree, else 0.1).")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed for splits, init and shuffling.")
    @click.option("--workers", type=click.IntRange(1), default=None, help="Image-decoding threads.")
    @click.option("--strict", is_flag=True, help="Fail on unreadable image files instead of skipping them.")
    @wraps(command)
    def wrapper(*args, data_dir, val_split, seed, workers, strict, **kwargs):
        from vqtool.data import DataOptions

        data = DataOptions(data_dir=data_dir, val_split=val_split, seed=seed, strict=strict, workers=workers)
        return command(*args, data=data, **kwargs)

    return wrapper


def device_option(command):
    """--device, checked where it is used (a GPU list is for Ultralytics; classifiers use torchrun)."""
    from vqtool.choices import DEVICES

    def complete(ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        return [CompletionItem(device) for device in DEVICES if device.startswith(incomplete)]

    return click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]|mps|N,N",
                        shell_complete=complete,
                        help="Where to run. A list of GPU indices (0,1) trains a YOLO detector on several GPUs "
                             "(Ultralytics' DDP); classifiers scale out with torchrun.")(command)


def print_summary(out, summary: dict, title: str) -> None:
    """A result document as JSON or as a two-column table."""
    if out.json:
        out.emit(summary)
        return
    rows = [[key, value] for key, value in summary.items() if key != "hint" and not isinstance(value, (dict, list))]
    out.table(["", "value"], rows, title=title)
    if summary.get("hint"):
        out.warn(summary["hint"])
