"""The learning-rate range test (as fastai's ``lr_find``): loss while the LR grows exponentially.

The model trains one batch per step with the LR rising from ``start`` to
``end``; the test stops once the smoothed loss passes four times its minimum.
The suggestion is the LR where the smoothed loss falls fastest (before its
minimum). The model's weights are restored afterwards.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vqtool.classification.config import make_optimizer
from vqtool.data import Split
from vqtool.data.pipeline import batches
from vqtool.plots import png_figure
from vqtool.runs.folder import new_run_dir, write_metrics_csv
from vqtool.errors import VQError
from vqtool.models.freezing import set_train_mode

STEPS = 100
SMOOTHING = 0.98
DIVERGED = 4.0


@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]  # smoothed

    @property
    def suggestion(self) -> float:
        best = min(range(len(self.losses)), key=self.losses.__getitem__)
        if best < 2:
            return self.lrs[best] / 10
        logs = [math.log10(lr) for lr in self.lrs[:best + 1]]
        slopes = [(self.losses[i + 1] - self.losses[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(1, best)]
        return self.lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]

    @property
    def min_loss_lr(self) -> float:
        return self.lrs[min(range(len(self.losses)), key=self.losses.__getitem__)]


def lr_range_test(model: nn.Module, train: Split, inputs, optimizer: torch.optim.Optimizer, batch_size: int, *,
                  start: float = 1e-7, end: float = 10.0, steps: int = STEPS, progress=None) -> RangeTest:
    """Run the test; every parameter group's LR keeps its ratio to the first group's."""
    saved = copy.deepcopy(model.state_dict())
    ratios = [group["lr"] / optimizer.param_groups[0]["lr"] for group in optimizer.param_groups]
    loss_fn = nn.CrossEntropyLoss()
    lrs, losses, average, best = [], [], 0.0, math.inf
    stream = _endless(train, batch_size, inputs.generator)
    set_train_mode(model)
    try:
        for step in range(steps):
            lr = start * (end / start) ** (step / max(1, steps - 1))
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = lr * ratio
            stored, labels = next(stream)
            loss = loss_fn(model(inputs.train(stored)), labels.to(inputs.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if progress:
                progress()
            average = SMOOTHING * average + (1 - SMOOTHING) * loss.item()
            smoothed = average / (1 - SMOOTHING ** (step + 1))
            if not math.isfinite(smoothed) or (step > 0 and smoothed > DIVERGED * best):
                break
            best = min(best, smoothed)
            lrs.append(lr)
            losses.append(smoothed)
    finally:
        model.load_state_dict(saved)
    if len(lrs) < 2:
        raise VQError("the LR range test diverged at once; lower its start (is the data labelled correctly?)")
    return RangeTest(lrs, losses)


def _endless(split: Split, batch_size: int, generator):
    while True:
        yield from batches(split, batch_size, shuffle=True, generator=generator, drop_last=len(split) > batch_size)


def find_lr(model: nn.Module, train: Split, inputs, config, *, reporter, out_dir: str | None = None,
            param_groups=None) -> dict:
    """`--lr-find`: the range test on what the run would train, saved in a new runs/lr-find-* folder."""
    folder = new_run_dir("lr-find", out_dir)
    model.to(inputs.device, memory_format=torch.channels_last)
    optimizer = make_optimizer(param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}],
                               config)
    with reporter.progress("LR range test", STEPS) as advance:
        test = lr_range_test(model, train, inputs, optimizer, config.batch_size, progress=advance)
    summary = save_range_test(test, folder)
    reporter.log(f"suggested learning rate {summary['suggested_lr']:.2e} (steepest fall of the loss); "
            f"plot in {summary['plot']}")
    return summary


def save_range_test(test: RangeTest, folder: Path) -> dict:
    """lr_find.csv and lr_find.png in ``folder``; the summary document."""
    write_metrics_csv(folder / "lr_find.csv", [{"lr": lr, "loss": loss} for lr, loss in zip(test.lrs, test.losses)])
    with png_figure(folder / "lr_find.png", figsize=(6, 4)) as (_, axis):
        axis.plot(test.lrs, test.losses)
        axis.axvline(test.suggestion, color="tab:red", linestyle="--", label=f"suggested {test.suggestion:.2e}")
        axis.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)", title="LR range test")
        axis.legend()
    return {"suggested_lr": test.suggestion, "min_loss_lr": test.min_loss_lr, "steps": len(test.lrs),
            "plot": str(folder / "lr_find.png"), "csv": str(folder / "lr_find.csv")}
