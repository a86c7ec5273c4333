"""What the curves of a finished run suggest doing next."""

from __future__ import annotations


def diagnose(history: list[dict]) -> str | None:
    """A hint when the curves show overfitting (train well above a flat or falling val) or underfitting."""
    last = history[-1]
    if last["val_top1"] is None:
        return None
    gap = last["train_top1"] - last["val_top1"]
    recent = [row["val_top1"] for row in history[-3:]]
    val_stalled = len(history) >= 3 and recent[-1] <= recent[0] + 0.002
    if gap > 0.05 and val_stalled:
        return (f"overfitting: train accuracy {last['train_top1']:.3f} vs val {last['val_top1']:.3f}, "
                f"val not improving over the last {len(recent)} epochs; try --augment basic or strong, "
                f"--label-smoothing 0.1, --early-stop 3, fewer epochs or more data")
    if not val_stalled and len(history) >= 2 and last["val_top1"] > history[-2]["val_top1"]:
        return "val accuracy was still rising at the last epoch: more --epochs may help"
    return None
