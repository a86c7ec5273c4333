"""Metrics from predictions: top-k accuracy, per-class precision/recall/F1, confusion matrices and their reports."""

from __future__ import annotations

import torch


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts with rows = true class, columns = predicted class."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels.view(-1, 1)).any(dim=1).float().mean().item()


def classification_report(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """The document ``vqtool eval --json`` prints."""
    matrix = confusion_matrix(logits.argmax(1), labels, len(classes)).double()
    true_positive = matrix.diag()
    support = matrix.sum(1)
    predicted = matrix.sum(0)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp_min(1), torch.zeros_like(predicted))
    recall = torch.where(support > 0, true_positive / support.clamp_min(1), torch.zeros_like(support))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12),
                     torch.zeros_like(precision))
    present = support > 0
    loss = torch.nn.functional.cross_entropy(logits.float(), labels.long()).item() if len(labels) else float("nan")
    return {
        "n": int(len(labels)),
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5) if len(classes) >= 5 else None,
        "loss": loss,
        "per_class": {
            name: {"precision": precision[i].item(), "recall": recall[i].item(), "f1": f1[i].item(),
                   "support": int(support[i].item())}
            for i, name in enumerate(classes)
        },
        "macro_precision": precision[present].mean().item(),
        "macro_recall": recall[present].mean().item(),
        "macro_f1": f1[present].mean().item(),
    }


def confused_pairs(matrix: torch.Tensor, classes: list[str], top: int) -> list[dict]:
    """Off-diagonal cells, most frequent first: [{"true", "predicted", "count"}]."""
    off = matrix.clone()
    off.fill_diagonal_(0)
    counts, order = off.flatten().sort(descending=True, stable=True)
    pairs = []
    for count, index in zip(counts.tolist(), order.tolist()):
        if count <= 0 or len(pairs) >= top:
            break
        true, predicted = divmod(index, len(classes))
        pairs.append({"true": classes[true], "predicted": classes[predicted], "count": int(count)})
    return pairs


def confusion_document(counts: torch.Tensor, classes: list[str], *, top: int, normalize: bool) -> dict:
    """What ``vqtool confusion`` reports of a count matrix (rows = true class), for any task."""
    matrix = counts.double() / counts.sum(1, keepdim=True).clamp_min(1) if normalize else counts
    return {"classes": classes, "normalized": normalize, "matrix": matrix.tolist(),
            "pairs": confused_pairs(counts, classes, top)}


def confusion_view(report: dict) -> dict:
    """How a command shows a confusion document (see :meth:`vqtool.registry.Task.view`)."""
    classes = report["classes"]
    return {"table": {"headers": ["true \\ predicted", *classes],
                      "rows": [[name, *row] for name, row in zip(classes, report["matrix"])],
                      "title": f"{report['dataset']} ({report['split']}, n={report['n']})"},
            "lines": ["most confused (true -> predicted: count):",
                      *(f"  {p['true']} -> {p['predicted']}: {p['count']}" for p in report["pairs"])]}
