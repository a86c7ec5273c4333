"""A classifier's run folder while it trains: what one epoch leaves behind, and what --resume reads back.

After every epoch one commit (:mod:`vqtool.runs.commit`) replaces, together:

    state.pt            the ResumeState: progress so far and the training objects' states (weights_only load)
    metrics.csv         one row per epoch so far
    model.safetensors   the best epoch's weights, and model.json describing them — when this epoch is the best
    model.json
    curves.png          when due (at most every CURVES_EVERY_S seconds) and on the run's last epoch

so a run killed at any moment reads as its last committed epoch, and
:meth:`TrainingRun.load_state` (the one reader of state.pt) continues from it.
After each commit the run's trackers (``--log``, :mod:`vqtool.runs.trackers`)
get the epochs they have not seen yet, so they never hold an epoch the folder lacks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from vqtool.classification.checkpoints.format import checkpoint_files
from vqtool.compute import distributed
from vqtool.errors import VQError, first_line
from vqtool.plots import plot_curves
from vqtool.runs import status
from vqtool.runs.commit import commit, committed, recover
from vqtool.runs.folder import metrics_csv
from vqtool.runs.trackers import Trackers

STATE_FILE = "state.pt"
CURVES_FILE = "curves.png"
# Drawing curves.png takes about half a second; when epochs are shorter it is redrawn at most this often
# (metrics.csv is written every epoch) and always with the last epoch.
CURVES_EVERY_S = 20.0


@dataclass
class ResumeState:
    """Where a run stands after ``epoch`` completed epochs: the one layout state.pt holds.

    The loop keeps its progress here; the training objects' states (``model`` to
    ``torch_rng``) are filled in by :meth:`capture` just before each write.
    """

    planned_epochs: int
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": 0, "val_top1": -math.inf})
    best_state: dict | None = None  # the best epoch's weights (of what is being fitted)
    bad_epochs: int = 0  # epochs since val last improved
    stopped_early: bool = False
    finished: bool = False  # the final checkpoint (with test metrics) is written: nothing left to resume
    model: dict | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    generator: torch.Tensor | None = None
    torch_rng: torch.Tensor | None = None
    recipe: dict | None = None  # the training step's own states: the weight average (--ema), the fp16 loss scaler

    def add(self, record: dict, model: nn.Module, has_val: bool, key: str = "val_top1") -> bool:
        """Record an epoch; True when it is the best so far by val metric ``key`` (its weights are kept)."""
        self.epoch = record["epoch"]
        self.history.append(record)
        if has_val and not _better(record, self.best, key):
            self.bad_epochs += 1
            return False
        self.best, self.bad_epochs = dict(record), 0
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True

    def capture(self, model: nn.Module, optimizer, scheduler, generator, recipe: dict | None = None) -> None:
        # a copy: the model's own tensors change later (finish loads the best epoch's weights into them)
        self.model = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.optimizer = optimizer.state_dict()
        self.scheduler = scheduler.state_dict() if scheduler is not None else None
        self.generator, self.torch_rng = generator.get_state(), torch.get_rng_state()
        self.recipe = recipe

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict: it would deep-copy tensors

    @classmethod
    def from_dict(cls, data: dict) -> "ResumeState":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _better(record: dict, best: dict, key: str) -> bool:
    """A higher val metric ``key``, or the same with a lower val loss (small val sets often tie on accuracy)."""
    return (record[key], -record["val_loss"]) > (best.get(key, -math.inf), -best.get("val_loss", math.inf))


class TrainingRun:
    """The run folder of a training job: its one writer (:meth:`commit`) and reader (:meth:`load_state`)."""

    def __init__(self, run_dir: Path, meta: dict, network: nn.Module | None = None, trackers: Trackers | None = None):
        self.run_dir = Path(run_dir)
        self.meta = meta
        self.network = network  # what the checkpoint holds, when only a part of it (a head) is being fitted
        self.trackers = trackers or Trackers()  # told each committed epoch (--log tensorboard, mlflow)
        self.curves_drawn = time.monotonic()

    def commit(self, state: ResumeState, *, best_model: nn.Module | None = None, metrics: dict | None = None,
               last: bool = False) -> None:
        """Write ``state`` and what goes with it as one change: the checkpoint of ``best_model`` (described by
        ``metrics``, default the best epoch's record) when given, curves.png when due or ``last``."""
        if not distributed.is_main():  # every rank holds the same weights and progress; one writes them
            return
        files = {STATE_FILE: lambda path: torch.save(state.to_dict(), path),
                 "metrics.csv": lambda path: Path(path).write_text(metrics_csv(state.history))}
        if best_model is not None:
            record = metrics or state.best
            files.update(checkpoint_files(self.network or best_model,
                                          {**self.meta, "metrics": {"best_epoch": record["epoch"], **record}}))
        if last or time.monotonic() - self.curves_drawn >= CURVES_EVERY_S:
            files[CURVES_FILE] = lambda path: plot_curves(path, state.history, title=self.title)
            self.curves_drawn = time.monotonic()
        commit(self.run_dir, files)
        self.trackers.log_epochs(state.history)  # after the commit: trackers hold what metrics.csv holds

    @property
    def title(self) -> str:
        """What curves.png says it shows: the run, its model and data."""
        record = self.meta.get("dataset") or {}
        dataset = Path(record["path"]).name if record.get("path") else record.get("source")
        return f"{self.run_dir.name}: {self.meta.get('architecture', '?')}" + (f" on {dataset}" if dataset else "")

    def load_state(self) -> ResumeState | None:
        """The last committed epoch's state (None before the first); rank 0 first cleans up after a killed writer
        (the other ranks read the same epoch through :func:`~vqtool.runs.commit.committed` meanwhile)."""
        if distributed.is_main():
            recover(self.run_dir)
        for _ in range(2):
            path = committed(self.run_dir, STATE_FILE)
            if not path.is_file():
                return None
            try:
                return ResumeState.from_dict(torch.load(path, map_location="cpu", weights_only=True))
            except FileNotFoundError:
                continue  # moved into place by rank 0 between the lookup and the read: look again
            except Exception as error:  # torch raises many types for a damaged or foreign file
                reason = first_line(error) if path.stat().st_size else "the file is empty"
                raise VQError(f"{path}: cannot read the resume state ({reason})") from error
        raise VQError(f"{self.run_dir}: the resume state moved while it was read; try again")


def training_status(run: TrainingRun, *, command: str, model: str, dataset: str, epochs: int):
    """:func:`~vqtool.runs.status.training_status`, drawing the committed epochs' curves.png when interrupted."""
    return status.training_status(run.run_dir, command=command, model=model, dataset=dataset, epochs=epochs,
                                   draw_curves=lambda path, rows: plot_curves(path, rows, title=run.title))
