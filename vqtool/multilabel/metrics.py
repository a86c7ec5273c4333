"""Multi-label metrics over sigmoid probabilities (N × L) and multi-hot targets, through scikit-learn.

A label is predicted when its probability is at least its threshold (``>=``,
everywhere: eval, predict, the thresholds chosen on val). Labels without a
positive in the data have no average precision (None) and stay out of the mAP;
macro F1 averages the labels that are in the data or predicted.
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.5


def average_precisions(probabilities: np.ndarray, targets: np.ndarray) -> list[float | None]:
    from sklearn.metrics import average_precision_score

    return [float(average_precision_score(targets[:, j], probabilities[:, j])) if targets[:, j].any() else None
            for j in range(targets.shape[1])]


def mean_ap(probabilities: np.ndarray, targets: np.ndarray) -> float | None:
    """Macro mAP over the labels that have a positive."""
    scores = [ap for ap in average_precisions(probabilities, targets) if ap is not None]
    return float(np.mean(scores)) if scores else None


def best_thresholds(probabilities: np.ndarray, targets: np.ndarray) -> list[float]:
    """Per label, the threshold of the highest F1 on these (val) images, halfway between the probability that
    reaches it and the next lower one, so that a tiny numeric difference at predict time does not flip it.
    A label without positives keeps 0.5."""
    from sklearn.metrics import precision_recall_curve

    chosen = []
    for j in range(targets.shape[1]):
        if not targets[:, j].any():
            chosen.append(DEFAULT_THRESHOLD)
            continue
        precision, recall, cuts = precision_recall_curve(targets[:, j], probabilities[:, j])
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
        best = int(np.argmax(f1[:-1]))  # the last point (recall 0) has no threshold
        below = probabilities[:, j][probabilities[:, j] < cuts[best]]
        chosen.append(float((cuts[best] + below.max()) / 2) if len(below) else float(cuts[best]) / 2)
    return chosen


def decisions(probabilities: np.ndarray, thresholds) -> np.ndarray:
    return probabilities >= np.asarray(thresholds, dtype=probabilities.dtype)


def multilabel_report(probabilities: np.ndarray, targets: np.ndarray, thresholds, classes: list[str]) -> dict:
    """mAP, per-label AP/precision/recall/F1/support, micro and macro F1, exact-match ratio, at ``thresholds``."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    predicted = decisions(probabilities, thresholds)
    truth = targets >= 0.5
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, average=None,
                                                                     zero_division=0)
    aps = average_precisions(probabilities, targets)
    per_label = {name: {"ap": _round(ap), "precision": _round(p), "recall": _round(r), "f1": _round(f),
                        "support": int(s), "predicted": int(predicted[:, j].sum()), "threshold": _round(t)}
                 for j, (name, ap, p, r, f, s, t) in enumerate(zip(classes, aps, precision, recall, f1, support,
                                                                  thresholds))}
    present = [ap for ap in aps if ap is not None]
    # macro F1 over the labels the data has or the model predicts: a label absent from both is no evidence
    scored = [j for j in range(len(classes)) if truth[:, j].any() or predicted[:, j].any()]
    return {"n": int(len(targets)), "labels": len(classes), "labels_scored": len(scored),
            "map": _round(float(np.mean(present)) if present else None),
            "micro_f1": _round(f1_score(truth, predicted, average="micro", zero_division=0)),
            "macro_f1": _round(f1_score(truth, predicted, average="macro", labels=scored, zero_division=0)
                               if scored else None),
            "exact_match": _round(accuracy_score(truth, predicted)),
            "per_label": per_label}


def _round(value):
    return None if value is None else round(float(value), 6)
