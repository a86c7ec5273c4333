"""Hyper-parameter search over `train` and `finetune` runs (`vqtool tune`), on Optuna.

Each trial is an ordinary run folder made by its task's ordinary entry point (classification's or multilabel's
``finetune`` or ``train``) under the study folder; the loop's epoch listener (:func:`vqtool.classification.training.loop.epoch_listener`) reports each epoch's val metric
to the pruner. :mod:`.space` is what varies, :mod:`.storage` where the study lives, :mod:`.trial` one trial,
:mod:`.study` the search, :mod:`.results` what it leaves (the best trial's --config YAML, a table, a figure).
Optuna is an optional extra: :func:`.storage.require_optuna` turns its absence into one line.
"""

from dataclasses import dataclass
from pathlib import Path

# The val metrics each task's trials may be compared on, its default first (here, where --help reads them without
# importing torch).
TASK_METRICS = {"classification": ("val_top1", "val_balanced_top1", "macro_f1"), "multilabel": ("map",)}
METRICS = tuple(dict.fromkeys(metric for metrics in TASK_METRICS.values() for metric in metrics))


# How a study runs: here, beside the metrics, so `vqtool tune --help` takes its defaults without importing Optuna.
@dataclass
class Settings:
    """How a study runs (none of this changes what its trials compute)."""

    name: str
    study_dir: Path
    storage: str | None = None  # an Optuna storage URL; None: study.db in the study folder
    trials: int | None = None  # until the study holds this many complete or pruned trials
    budget: float | None = None  # seconds this process may spend
    pruner: str = "median"
    verbose: bool = False  # the trials' own log lines too
    keep_checkpoints: int = 10  # the best trials whose run folders keep their weights
