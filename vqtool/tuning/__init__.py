"""Hyper-parameter search over `train` and `finetune` runs (`vqtool tune`), on Optuna.

Each trial is an ordinary run folder made by its task's ordinary entry point (classification's or multilabel's
``finetune`` or ``train``) under the study folder; the loop's epoch listener (:func:`vqtool.classification.training.loop.epoch_listener`) reports each epoch's val metric
to the pruner. :mod:`.space` is what varies, :mod:`.storage` where the study lives, :mod:`.trial` one trial,
:mod:`.study` the search, :mod:`.results` what it leaves (the best trial's --config YAML, a table, a figure).
Optuna is an optional extra: :func:`.storage.require_optuna` turns its absence into one line.
"""

from dataclasses import dataclass
from pathlib import Path

from vqtool.option_fields import option

# The val metrics each task's trials may be compared on, its default first (here, where --help reads them without
# importing torch).
TASK_METRICS = {"classification": ("val_top1", "val_balanced_top1", "macro_f1"), "multilabel": ("map",)}
METRICS = tuple(dict.fromkeys(metric for metrics in TASK_METRICS.values() for metric in metrics))
PRUNERS = ("median", "hyperband", "none")


# How a study runs: here, beside the metrics, so `vqtool tune --help` takes its defaults without importing Optuna.
@dataclass
class Settings:
    """How a study runs (none of this changes what its trials compute). The option fields make `vqtool tune`'s
    options; --study and --out are made into ``name`` and ``study_dir``, --budget's durations into seconds."""

    name: str
    study_dir: Path
    storage: str | None = option(None, "An Optuna storage shared by several workers: sqlite:///FILE, "
                                 "postgresql://..., mysql://... or journal:FILE (default: sqlite study.db in the study "
                                 "folder).", metavar="URL")
    trials: int | None = option(None, "Run until the study holds N trials (complete, pruned, or running in another "
                                "worker).", min=1, metavar="N")
    budget: float | None = None  # seconds this process may spend
    pruner: str = option("median", "Stops trials whose val metric lags the others' at the same epoch.",
                         choices=PRUNERS, show_default=True)
    verbose: bool = option(False, "Show the trials' own log lines too.", aliases=("-v",))
    keep_checkpoints: int = option(10, "Trials that keep their weights (the N best); the others keep their metrics "
                                   "and args.", min=1, metavar="N", show_default=True)
