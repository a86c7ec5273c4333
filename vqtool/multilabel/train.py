"""Multi-label runs: classification's `train` and `finetune` jobs with the multi-label objective, which loads the
data, and at the end chooses each label's threshold on val (the highest F1) and stores it in the checkpoint."""

from __future__ import annotations

import time
from dataclasses import asdict

import torch

from vqtool.classification.inference.logits import logits_of
from vqtool.classification.training.run_lifecycle import finish_run
from vqtool.classification.training.train import summarize
from vqtool.compute.device import resolve_device
from vqtool.multilabel.config import MultilabelOptions
from vqtool.multilabel.data import load_multilabel
from vqtool.multilabel.metrics import DEFAULT_THRESHOLD, best_thresholds, multilabel_report
from vqtool.multilabel.objective import MultiLabel


class MultiLabelRun(MultiLabel):
    """The multi-label objective with what a whole run adds: its data and its end."""

    def load(self, spec: str, data):
        return load_multilabel(spec, data, self.options.labels_from)

    def record(self) -> dict:
        return {self.task: asdict(self.options)}  # a task's own options under its name: --config reads them back

    def finish(self, model, result, dataset, splits, preprocess, config, run, started) -> dict:
        """Thresholds from val (0.5 without val), test metrics when there is a test split, the final commit."""
        device = resolve_device(config.device)
        summary = summarize(result, config, run.run_dir)
        summary["hint"] = None  # classification's hints speak of top-1 accuracy and label smoothing
        summary.pop("val_balanced_top1")
        for key in ("train_top1", "val_top1"):  # here: the share of label decisions right at 0.5
            summary[key.replace("top1", "label_accuracy")] = summary.pop(key)
        summary["val_map"] = result.best.get("val_map")
        thresholds = [DEFAULT_THRESHOLD] * len(dataset.classes)
        if "val" in splits:
            probabilities, targets = _probabilities(model, splits["val"], preprocess, device)
            thresholds = best_thresholds(probabilities, targets)
            tuned = multilabel_report(probabilities, targets, thresholds, dataset.classes)
            summary["val_macro_f1"], summary["val_micro_f1"] = tuned["macro_f1"], tuned["micro_f1"]
        run.meta["thresholds"] = [round(t, 6) for t in thresholds]
        metrics = dict(result.best)
        if "test" in splits:
            probabilities, targets = _probabilities(model, splits["test"], preprocess, device)
            report = multilabel_report(probabilities, targets, run.meta["thresholds"], dataset.classes)
            summary.update(test_map=report["map"], test_macro_f1=report["macro_f1"],
                           test_exact_match=report["exact_match"])
            metrics["test_map"] = report["map"]
        result.state.finished = True
        run.commit(result.state, best_model=model.cpu(), metrics=metrics)
        summary["seconds"] = round(time.perf_counter() - started, 2)
        finish_run(run, summary, {})
        return {**summary, "task": self.task, "labels": len(dataset.classes)}


def _probabilities(model, split, preprocess, device):
    """(sigmoid probabilities, targets) of a prepared split, as numpy arrays."""
    return torch.sigmoid(logits_of(model, split, preprocess, device)).numpy(), split.labels.numpy()


def objective_of(options: MultilabelOptions) -> MultiLabelRun:
    """The run of checked options (the task checks them before torch loads)."""
    return MultiLabelRun(options)
