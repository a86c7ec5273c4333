"""One trial: the options it runs with, the ordinary `finetune` or `train` entry point of the study's task (the
multilabel task's objective, defaults and thresholds for multi-label data) in a run folder of the study, and the
per-epoch val metric it reports to the pruner through the loop's epoch listener."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from vqtool.classification.config import FinetuneOptions, TrainConfig
from vqtool.classification.training.loop import epoch_listener
from vqtool.classification.recipes import recipe_values
from vqtool.data import DataOptions
from vqtool.errors import VQError
from vqtool.metrics import classification_report
from vqtool.registry import Request, registered_tasks
from vqtool.reporter import Reporter
from vqtool.runs.status import PRUNED
from vqtool.tuning.storage import require_optuna

RECORD_KEYS = {"map": "val_map"}  # a metric's key in the loop's epoch record, where its name is not that key


class Pruned(require_optuna().TrialPruned):
    """Raised through the loop to end a trial early (the pruner, or the budget); its run folder reads as pruned."""

    run_status = PRUNED


@dataclass
class Job:
    """What every trial of a study shares: the command, its data, the options the user fixed."""

    command: str  # "finetune" or "train"
    dataset: str
    data: DataOptions
    values: dict  # option name -> value (TrainConfig, FinetuneOptions and the task's own fields): given and defaults
    explicit: set = field(default_factory=set)  # the options the user gave (they win over a recipe's values)
    metric: str = "val_top1"
    task: str = "classification"  # the registered task whose entry point runs each trial


def trial_values(job: Job, sampled: dict) -> dict:
    """The trial's option values, as `vqtool finetune --config` would have them: a recipe's values fill only the
    options neither given nor sampled."""
    values = {**job.values, **sampled, "seed": job.data.seed}
    if values.get("recipe"):
        values.update(recipe_values(values["recipe"], job.explicit | set(sampled), values["epochs"]))
    return values


def trial_options(job: Job, sampled: dict) -> tuple[TrainConfig, FinetuneOptions | None]:
    """The trial's TrainConfig (and FinetuneOptions), checked: invalid combinations raise VQError."""
    values = trial_values(job, sampled)
    config = TrainConfig.from_dict(values)
    config.check()
    if job.command != "finetune":
        return config, None
    tune = FinetuneOptions.from_dict(values)
    tune.check(config)
    return config, tune


class EpochReports:
    """The loop's epoch listener for one trial: reports the metric, prunes, and stops at the deadline."""

    def __init__(self, trial, metric: str, deadline: float | None):
        self.trial, self.metric, self.deadline = trial, metric, deadline
        self.values: dict[int, float] = {}

    def __call__(self, record: dict, val_predictions) -> None:
        if val_predictions is None:
            raise VQError("vqtool tune compares trials on their validation split: give the data one (a val/ "
                          "folder or --val-split above 0)", usage=True)
        epoch = record["epoch"]
        self.values[epoch] = value = self.value_of(record, val_predictions)
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise Pruned(f"pruned after epoch {epoch} ({self.metric} {value:.4f})")
        self.check_deadline()

    def value_of(self, record: dict, val_predictions) -> float:
        if self.metric == "macro_f1":
            logits, labels = val_predictions()
            return classification_report(logits, labels, [str(i) for i in range(logits.shape[1])])["macro_f1"]
        return float(record[RECORD_KEYS.get(self.metric, self.metric)])

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise Pruned("stopped by --budget")


class TrialReporter:
    """What a trial's job says: its warnings once each, progress bars; its log lines only when ``verbose``. Every
    progress step checks the budget, so a long epoch or backbone pass ends at the deadline too."""

    def __init__(self, reporter: Reporter, verbose: bool):
        self.reporter, self.verbose, self.debug = reporter, verbose, getattr(reporter, "debug", False)
        self.warned: set[str] = set()
        self.reports: EpochReports | None = None

    def log(self, message: str) -> None:
        if self.verbose:
            self.reporter.log(message)

    def warn(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            self.reporter.warn(message)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None):
        with self.reporter.progress(description, total) as advance:
            def step(n=1):
                advance(n)
                if self.reports is not None:
                    self.reports.check_deadline()

            yield step

    def table(self, columns, rows, title=None) -> None:
        pass


def run_trial(job: Job, trial, sampled: dict, run_dir: Path, reporter: TrialReporter,
              deadline: float | None) -> tuple[float, dict]:
    """Train the trial's run through its task's entry point, as `vqtool finetune` (or `train`) would with the same
    options; (its value: the metric at the best epoch, which the checkpoint holds; the summary)."""
    request = trial_request(job, sampled, run_dir, reporter)  # the entry point checks the options as the command's
    reports = reporter.reports = EpochReports(trial, job.metric, deadline)
    try:
        with epoch_listener(reports):
            summary = getattr(registered_tasks()[job.task], job.command)(request)
    finally:
        reporter.reports = None
    return reports.values[summary["best_epoch"]], summary


def trial_request(job: Job, sampled: dict, run_dir: Path | None = None, reporter=None) -> Request:
    """The Request of the trial's `vqtool finetune` (or `train`) to its task."""
    values = trial_values(job, sampled)
    return Request(job.command, dataset=job.dataset, data=job.data, reporter=reporter,
                   params={**values, "model_name": values["model"], "out_dir": run_dir and str(run_dir)},
                   # the options neither given nor sampled: a task's own defaults may replace them (multilabel's
                   # frozen-head defaults), as they would in the command that replays best.yaml
                   defaulted=frozenset(values) - job.explicit - set(sampled))


def check_space(job: Job, space, source: str) -> None:
    """Each value a space may give an option (a range's ends, each choice) passes the command's own checks, with the
    other options as given: a bad value is one error line before any trial runs."""
    for name, parameter in space.parameters.items():
        for candidate in parameter.candidates():
            try:
                trial_options(job, {**space.fixed, name: candidate})
            except VQError as error:
                raise VQError(f"{source}: {name} {candidate}: {error}", usage=True) from error
    try:
        trial_options(job, dict(space.fixed))
    except VQError as error:
        raise VQError(f"{source}: {error}", usage=True) from error
