"""Label-error candidates and outliers from frozen-backbone embeddings.

A linear head (multinomial logistic regression on the L2-normalised
embeddings) is fitted k times, each time predicting the fold it did not see:
every image gets a probability for each class from a model that never saw its
label. cleanlab's
confident learning (``find_label_issues``) turns those out-of-fold probabilities
into the images whose given label is likely wrong, ranked by self-confidence,
of which those whose given label is still as likely as chance are dropped
(:func:`label_issues` says why); the suggested label is the most probable class.

Multi-label data (``labels`` an N × L 0/1 matrix) gets one-vs-rest heads (a logistic regression per label, fitted
together: the objective is their sum), out-of-fold by plain k-fold, and cleanlab's multi-label
``find_label_issues``; the suggested label set is the labels whose probability reaches the label's threshold
of the best F1 on these out-of-fold probabilities (as multi-label training chooses its thresholds on val).

The out-of-fold probabilities are kept in the store (``probabilities/<key>/``, an entry like the features': data.bin
and its checksummed index.json), the key a hash of everything they depend on: the embeddings' bytes (so the files,
the backbone, its weights and the preprocessing), the labels, the folds' seed and the head's settings. An unchanged
second inspection reads them and fits nothing.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import hashlib
import json

import numpy as np
import torch

from vqtool.data.store import Entry, save_array
from vqtool.reporter import Reporter

FOLDS = 5
# logistic regression's C on unit-length embeddings; on the flips benchmark (benchmarks/inspect_quality.py) it found
# more flips, more precisely, than standardised features with C 0.05 or 0.005, or C 10, or 20 nearest neighbours;
# with the chance rule of label_issues, C 0.1, a temperature or a kNN mean found fewer flips or
# more false ones (docs/guides/inspect.md)
REGULARISATION = 1.0
MAX_ITERATIONS = 100
HEAD_VERSION = 1  # bump when the head, its fit or the folds change: probabilities stored by another are not reused
# (not for what label_issues does with them: it reads the stored probabilities as they are)
OUTLIER_Z = 3.5  # modified z-score (Iglewicz and Hoaglin) of the similarity to the nearest class centre


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """N × classes probabilities, each row from a head fitted without that image (``labels`` are 0..K-1, or an
    N × L 0/1 matrix: then each column is a label's probability, one-vs-rest)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    outputs = outputs_of(labels)
    probabilities = np.zeros((len(labels), outputs), dtype=np.float64)
    if is_multilabel(labels):
        splitter = KFold(n_splits=folds_of(labels), shuffle=True, random_state=seed)
        targets, link = torch.from_numpy(labels).float(), torch.sigmoid
    else:
        splitter = StratifiedKFold(n_splits=folds_of(labels), shuffle=True, random_state=seed)
        targets, link = torch.from_numpy(labels), lambda logits: torch.softmax(logits, dim=1)
    inputs = torch.from_numpy(features).float()
    for fitted_on, held_out in splitter.split(features, labels):
        weight, bias = _logistic_regression(inputs[fitted_on], targets[fitted_on], outputs)
        with torch.no_grad():
            probabilities[held_out] = link(inputs[held_out] @ weight + bias).double().numpy()
    return probabilities


def is_multilabel(labels: np.ndarray) -> bool:
    return labels.ndim == 2


def outputs_of(labels: np.ndarray) -> int:
    """The head's outputs: the classes, or the labels of a multi-label matrix."""
    return labels.shape[1] if is_multilabel(labels) else int(labels.max()) + 1


def folds_of(labels: np.ndarray) -> int:
    """The folds: FOLDS, fewer when the smallest class (or, multi-label, the dataset) has fewer images."""
    if is_multilabel(labels):
        return min(FOLDS, len(labels))
    return min(FOLDS, int(np.bincount(labels, minlength=outputs_of(labels)).min()))


def stored_out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, seed: int, reporter: Reporter,
                                     store: bool = True, dataset: str | None = None) -> np.ndarray:
    """:func:`out_of_fold_probabilities`, read from the store when these features, labels and settings were seen
    before, else computed (and stored, with ``store``; ``dataset`` names them in `vqtool cache list`)."""
    if not store:
        return out_of_fold_probabilities(features, labels, seed)
    entry = Entry("probabilities", probability_key(features, labels, seed))
    shape = [len(labels), outputs_of(labels)]
    index = entry.index()
    if entry.damage:
        reporter.warn(f"store: {entry.folder} is damaged ({entry.damage}); fitting the label head again")
    if index is not None and index["shape"] == shape and index["dtype"] == "float64":
        reporter.log(f"store: out-of-fold probabilities read from {entry.folder} (no label head fitted)")
        return entry.open(index).gather(torch.arange(shape[0])).numpy()
    probabilities = out_of_fold_probabilities(features, labels, seed)
    save_array(entry, torch.from_numpy(probabilities), {"kind": "probabilities", "data": dataset,
                                                        "head": head_settings(seed)},
               reporter, "the out-of-fold probabilities")
    return probabilities


def head_settings(seed: int) -> dict:
    """What, besides the embeddings and the labels, the out-of-fold probabilities depend on."""
    return {"version": HEAD_VERSION, "folds": FOLDS, "regularisation": REGULARISATION,
            "max_iterations": MAX_ITERATIONS, "seed": seed}


def probability_key(features: np.ndarray, labels: np.ndarray, seed: int) -> str:
    digest = hashlib.sha256(json.dumps({**head_settings(seed), "features": [str(features.dtype), *features.shape],
                                        "labels": list(labels.shape) if is_multilabel(labels) else len(labels)},
                                       sort_keys=True).encode())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(features).tobytes())
    return digest.hexdigest()[:32]


def _logistic_regression(inputs: torch.Tensor, targets: torch.Tensor, classes: int):
    """Multinomial logistic regression (scikit-learn's objective: C times the summed log loss plus half the squared
    weights), fitted full-batch by L-BFGS: a few matrix products per step, seconds for 50,000 images. With float
    N × L ``targets``, one binary logistic regression per label (the same objective for each, summed)."""
    weight = torch.zeros(inputs.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=MAX_ITERATIONS, tolerance_grad=1e-5,
                                  history_size=20, line_search_fn="strong_wolfe")
    penalty = 1 / (2 * REGULARISATION * len(inputs))  # the objective divided by C × N: the same minimum

    def objective():
        optimizer.zero_grad()
        loss = _log_loss(inputs @ weight + bias, targets) + penalty * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    return weight.detach(), bias.detach()


def _log_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The log loss per image (summed over the labels of a multi-label image)."""
    if targets.is_floating_point():
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(targets)
    return torch.nn.functional.cross_entropy(logits, targets)


@contextlib.contextmanager
def _quiet():
    """scikit-learn's convergence warnings: the probabilities are what matters, and the command prints no noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def label_issues(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, int]:
    """Positions of the likely mislabelled images, the most likely first, and how many cleanlab proposed.

    cleanlab's confident learning proposes them; for single-label data, those whose given label the head still finds
    at least as likely as chance (that label's share of the images) are dropped. A weak head (Fashion-MNIST through
    an ImageNet backbone: 80 % out-of-fold accuracy) leaves its own confusions between look-alike classes in
    cleanlab's noise estimate: on the flips benchmark 351 candidates for 150 flips, the confused images at a
    given-label probability near chance (median 0.10 of 10 classes), the flips far below it (median 0.015). On
    photos, where the head is strong, the rule drops nothing (benchmarks/inspect_quality.py flips;
    docs/guides/inspect.md).
    """
    proposed = cleanlab_issues(labels, probabilities)
    if is_multilabel(labels):
        return proposed, len(proposed)
    return proposed[below_chance(labels, probabilities)[proposed]], len(proposed)


def cleanlab_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """cleanlab's label issues (its default filter; its multi-label version for an N × L ``labels`` matrix),
    ranked by self-confidence."""
    if is_multilabel(labels):
        from cleanlab.multilabel_classification.filter import find_label_issues

        labels = [np.flatnonzero(row).tolist() for row in labels]  # cleanlab's form: each image's label indices
    else:
        from cleanlab.filter import find_label_issues
    with _quiet(), open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        return np.asarray(find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence",
                                            n_jobs=1), dtype=np.int64)


def below_chance(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Whether each image's given label is less probable than a guess by the labels' frequencies would make it."""
    share = np.bincount(labels, minlength=probabilities.shape[1]) / len(labels)
    return probabilities[np.arange(len(labels)), labels] < share[labels]


def centre_similarity(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image's cosine similarity to the nearest class centre (``embeddings`` L2-normalised). Multi-label: the
    centres of each label's images, and of the images without a label."""
    if is_multilabel(labels):
        members = np.concatenate([labels > 0, ~labels.any(axis=1, keepdims=True)], axis=1)
    else:
        members = labels[:, None] == np.unique(labels)[None, :]
    centres = np.stack([embeddings[column].mean(axis=0) for column in members.T if column.any()])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    return (embeddings @ centres.T).max(axis=1)


def outliers(similarity: np.ndarray) -> np.ndarray:
    """Positions of the images much farther from every class centre than the rest, the farthest first."""
    median = np.median(similarity)
    spread = np.median(np.abs(similarity - median))
    if len(similarity) < 8 or spread <= 0:
        return np.zeros(0, dtype=np.int64)
    score = 0.6745 * (similarity - median) / spread
    found = np.nonzero(score < -OUTLIER_Z)[0]
    return found[np.argsort(similarity[found])]


def imbalance(counts: dict[str, int], multilabel: bool = False) -> dict:
    """The largest class (or label) over the smallest, and a hint when the ratio is high."""
    noun, nouns, remedy = (("label", "labels", "--pos-weight auto") if multilabel else
                           ("class", "classes", "--class-weights auto or --balanced-sampler"))
    present = {name: count for name, count in counts.items() if count}
    if not present:
        return {"ratio": None, "largest": None, "smallest": None, "empty": sorted(counts), "hint": None}
    largest, smallest = max(present, key=present.get), min(present, key=present.get)
    ratio = round(present[largest] / present[smallest], 2)
    empty = sorted(name for name, count in counts.items() if not count)
    hint = None
    if ratio >= 5:
        hint = (f"{noun} {largest} has {ratio}x the images of {smallest}: train with {remedy}, or gather more of the "
                f"small {nouns}")
    if empty:
        hint = f"{nouns} without images: {', '.join(empty)}" + (f"; {hint}" if hint else "")
    return {"ratio": ratio, "largest": largest, "smallest": smallest, "empty": empty, "hint": hint}
