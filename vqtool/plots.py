"""Figures saved as PNG files: matplotlib without a display, each file written atomically."""

from __future__ import annotations

import contextlib
from pathlib import Path

from vqtool.errors import VQError
from vqtool.reporter import Reporter
from vqtool.runs.atomic_files import atomic_save


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display is needed, none is opened)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def png_figure(path: Path, *, replace: bool = True, **subplots):
    """``with png_figure(path, figsize=(6, 4)) as (figure, axes):`` draw; on leaving, the PNG is written.

    ``subplots`` are ``plt.subplots`` arguments. The figure is closed either way,
    so long runs that redraw their curves do not accumulate figures. ``replace=False``:
    VQError rather than write over an existing file.
    """
    plt = pyplot()
    figure, axes = plt.subplots(**subplots)
    try:
        yield figure, axes
        figure.tight_layout()
        atomic_save(Path(path), lambda tmp: figure.savefig(tmp, format="png", dpi=100), replace=replace)
    finally:
        plt.close(figure)


def plot_curves(path: Path, history: list[dict], title: str | None = None) -> None:
    """Loss and accuracy per epoch, train vs val; ``title`` names the run (and its model)."""
    panels = {}
    for metric, label in (("loss", "loss"), ("top1", "accuracy")):
        series = {split: [row.get(f"{split}_{metric}") for row in history] for split in ("train", "val")}
        panels[label] = {split: values for split, values in series.items()
                         if any(v is not None and v == v for v in values)}
    plot_panels(path, [row["epoch"] for row in history], panels, title)


def plot_panels(path: Path, epochs: list[int], panels: dict[str, dict[str, list]], title: str | None = None) -> None:
    """Side-by-side charts of values per epoch: ``panels`` maps each y-axis label to its named series."""
    with png_figure(path, ncols=len(panels), figsize=(5 * len(panels), 4), squeeze=False) as (figure, axes):
        for axis, (label, series) in zip(axes[0], panels.items()):
            for name, values in series.items():
                axis.plot(epochs, values, marker="o", label=name)
            _epoch_axis(axis, epochs)
            axis.set_ylabel(label)
            axis.legend()
        if title:
            figure.suptitle(title)


def _epoch_axis(axis, epochs: list) -> None:
    """Whole epochs on the x axis, half an epoch of margin either side (one epoch reads 1, not 0.945-1.050)."""
    import matplotlib.ticker

    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
    if epochs:
        axis.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    axis.grid(alpha=0.3)


# metrics.csv column -> axis label of the val curves `vqtool runs compare --png` overlays
VAL_CURVES = {"val_loss": "val loss", "val_top1": "val top-1", "map50_95": "val mAP50-95",
              "val_map": "val mAP (multi-label, macro)"}


def plot_val_curves(path: Path, histories: dict[str, list[dict]], *, replace: bool = False) -> None:
    """Each run's val curves (``histories``: run name -> metrics.csv rows) overlaid, a panel per metric."""
    panels = [column for column in VAL_CURVES
              if any(row.get(column) is not None for rows in histories.values() for row in rows)]
    if not panels:
        raise VQError("--png: none of these runs has a val curve (no val_loss, val_top1, map50_95 or val_map in metrics.csv)",
                      usage=True)
    with png_figure(path, replace=replace, ncols=len(panels), figsize=(5 * len(panels), 4), squeeze=False) as (
            figure, axes):
        for axis, column in zip(axes[0], panels):
            for name, rows in histories.items():
                points = [(row["epoch"], row[column]) for row in rows if row.get(column) is not None]
                if points:
                    axis.plot(*zip(*points), marker="o", label=name)
            _epoch_axis(axis, [row["epoch"] for rows in histories.values() for row in rows])
            axis.set_ylabel(VAL_CURVES[column])
            axis.legend()


def write_confusion_png(report: dict, png: str | None, *, replace: bool, reporter: Reporter) -> None:
    """``confusion --png``: the report's heatmap at ``png`` when one was asked for, every task's the same."""
    if png:
        plot_confusion(report, Path(png), replace=replace)
        reporter.log(f"wrote {png}")


def plot_confusion(report: dict, path: Path, *, replace: bool = False) -> None:
    """A confusion report's matrix (``classes``, ``matrix``, ``normalized``) as a heatmap."""
    import torch

    classes, matrix = report["classes"], torch.tensor(report["matrix"], dtype=torch.float64)
    side = max(5.0, 0.55 * len(classes) + 2)
    with png_figure(path, replace=replace, figsize=(side, side)) as (figure, axis):
        _draw_matrix(figure, axis, classes, matrix, report)


def _draw_matrix(figure, axis, classes: list[str], matrix, report: dict) -> None:
    image = axis.imshow(matrix.numpy(), cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(classes) <= 30:
        threshold = matrix.max().item() / 2
        for i in range(len(classes)):
            for j in range(len(classes)):
                value = matrix[i, j].item()
                text = f"{value:.2f}" if report["normalized"] else f"{int(value)}"
                axis.text(j, i, text, ha="center", va="center", fontsize=8,
                          color="white" if value > threshold else "black")
    axis.set_title(f"{report['dataset']} ({report['split']}, n={report['n']})")
