"""A classifier run's start and end as the trackers and `vqtool runs` see them (see :mod:`vqtool.runs.trackers`).

The epochs reach the trackers through :meth:`TrainingRun.commit`; this module
opens them when the job starts, and at its end sends the final metrics, the
figures (curves, and for TensorBoard the confusion heatmap and the mistakes
grid of the best weights on the test split, else the val split) and the run's files.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from vqtool.classification.inference.classifier import Classifier
from vqtool.classification.inference.confusion import plot_misclassified
from vqtool.plots import plot_confusion
from vqtool.classification.inference.evaluate import Evaluation
from vqtool.classification.inference.logits import logits_of
from vqtool.classification.training.run import ResumeState, TrainingRun
from vqtool.compute.device import resolve_device
from vqtool.metrics import confusion_document, confusion_matrix
from vqtool.reporter import Reporter
from vqtool.runs.atomic_files import read_json
from vqtool.runs.trackers import TENSORBOARD, RunIdentity, TrackingOptions, open_trackers

ARTIFACTS = ("model.json", "model.safetensors", "metrics.csv", "curves.png")
FINAL_METRICS = ("best_epoch", "train_loss", "train_top1", "val_loss", "val_top1", "test_loss", "test_top1")


def start_run(run_dir: Path, meta: dict, tracking: TrackingOptions | None, *, dataset_name: str,
              resume: ResumeState | None, reporter: Reporter, network=None) -> TrainingRun:
    """The TrainingRun of a starting (or resumed) job, with its trackers open."""
    run_dir = Path(run_dir)
    model = meta["train_args"]["model"]
    identity = RunIdentity(run_dir, read_json(run_dir / "args.json")["command"], model, dataset_name)
    trackers = open_trackers(tracking, identity, experiment_default=dataset_name,
                             logged_epoch=resume.epoch if resume else 0, reporter=reporter)
    return TrainingRun(run_dir, meta, network=network, trackers=trackers)


def final_figures(run: TrainingRun, model, dataset, splits: dict, preprocess, device: str,
                  test_logits=None) -> dict[str, Path]:
    """The confusion heatmap and mistakes grid of ``model`` (drawn into a temporary folder), when TensorBoard
    will show them; call before the final commit moves the model to the CPU."""
    held_out = "test" if "test" in splits else "val" if "val" in splits else None
    if TENSORBOARD not in run.trackers.names or held_out is None:
        return {}
    split = splits[held_out]
    logits = test_logits
    if held_out != "test" or logits is None:
        logits = logits_of(model, split, preprocess, resolve_device(device))
    folder = Path(tempfile.mkdtemp(prefix="vqtool-figures-"))
    counts = confusion_matrix(logits.argmax(1), split.labels, len(dataset.classes))
    plot_confusion({"dataset": dataset.name, "split": held_out, "n": int(counts.sum()),
                    **confusion_document(counts, dataset.classes, top=5, normalize=False)}, folder / "confusion.png")
    figures = {"confusion": folder / "confusion.png"}
    evaluation = Evaluation(Classifier(model, dataset.classes, preprocess, {}), dataset, held_out, split, logits)
    if plot_misclassified(evaluation, folder / "mistakes.png"):
        figures["mistakes"] = folder / "mistakes.png"
    return figures


def finish_run(run: TrainingRun, summary: dict, figures: dict[str, Path]) -> None:
    """After the final commit: the trackers get the final metrics, figures and files."""
    try:
        curves = {"curves": run.run_dir / "curves.png"} if (run.run_dir / "curves.png").is_file() else {}
        run.trackers.finish({key: summary[key] for key in FINAL_METRICS if summary.get(key) is not None},
                            {**curves, **figures}, [run.run_dir / name for name in ARTIFACTS])
    finally:
        for folder in {path.parent for path in figures.values()}:
            shutil.rmtree(folder, ignore_errors=True)

