"""One training batch: forward under autocast, the loss on (mixed) targets, backward, and every ``--accumulate``
batches one optimizer step (gradients unscaled and clipped), the LR schedule and the weight average moved.

Accumulating N batches and stepping once trains as one batch N times larger
would (without batch norm): each batch's loss is divided by the number of
batches in its group, so the summed gradients are the big batch's mean.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
from torch import nn

from vqtool.classification.config import TrainConfig
from vqtool.classification.training.ema import WeightAverage
from vqtool.classification.training.mixing import BatchMixer, dominant_label
from vqtool.classification.training.objective import SINGLE_LABEL
from vqtool.classification.training.schedule import Schedule
from vqtool.compute.precision import Precision, amp_choice
from vqtool.data import Split
from vqtool.reporter import Reporter


@dataclass
class TrainStep:
    """What each training batch does to the model, its optimizer and what follows them."""

    model: nn.Module  # the unwrapped model: what the weight average follows
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    loss_fn: nn.Module
    precision: Precision
    accumulate: int = 1
    clip_grad: float = 0.0
    mixer: BatchMixer | None = None
    average: WeightAverage | None = None
    reporter: Reporter | None = None  # set to log the first step's cost (torch.compile compiles then)
    scored: object = dominant_label  # targets -> what training accuracy is measured against

    def start_epoch(self, generator: torch.Generator) -> None:
        if self.mixer:
            self.mixer.reseed(generator)

    def __call__(self, network, x: torch.Tensor, labels: torch.Tensor, index: int, total: int):
        """(loss, logits, labels to score accuracy against) of batch ``index`` of ``total`` in the epoch."""
        started = time.perf_counter()
        x, targets = self.mixer(x, labels) if self.mixer else (x, labels)
        group_start = index - index % self.accumulate
        in_group = min(self.accumulate, total - group_start)  # batches this optimizer step averages
        last = index + 1 == group_start + in_group
        if index == group_start:
            self.optimizer.zero_grad(set_to_none=True)
        # DDP: gradients are averaged over ranks once per optimizer step, not after every accumulated batch
        sync = contextlib.nullcontext() if last or not hasattr(network, "no_sync") else network.no_sync()
        with sync:
            with self.precision.autocast():
                logits = network(x)
            loss = self.loss_fn(logits.float(), targets)
            self.precision.backward(loss / in_group)
        if last:
            self._optimizer_step()
        if self.reporter is not None:
            self._log_first_step(started)
        return loss.detach(), logits.detach(), self.scored(targets)

    def _optimizer_step(self) -> None:
        self.precision.unscale(self.optimizer)
        if self.clip_grad:
            nn.utils.clip_grad_norm_([p for group in self.optimizer.param_groups for p in group["params"]],
                                     self.clip_grad)
        self.precision.step(self.optimizer)
        self.schedule.after_step()
        if self.average is not None:
            self.average.update(self.model)

    def _log_first_step(self, started: float) -> None:
        if self.precision.device.type == "cuda":
            torch.cuda.synchronize(self.precision.device)
        self.reporter.log(f"torch.compile: the first training step took {time.perf_counter() - started:.1f}s "
                          f"(compiling)")
        self.reporter = None

    def state_dict(self) -> dict:
        """What --resume needs beyond the model, optimizer and schedule: the weight average, the loss scaler."""
        return {"average": self.average.state_dict() if self.average else None,
                "scaler": self.precision.state_dict()}

    def load_state_dict(self, state: dict | None) -> None:
        if not state:
            return
        if self.average is not None and state.get("average"):
            self.average.load_state_dict(state["average"])
        self.precision.load_state_dict(state.get("scaler"))


def make_train_step(model: nn.Module, optimizer, schedule: Schedule, train: Split, classes: list[str],
                    device: torch.device, config: TrainConfig, reporter: Reporter,
                    objective=SINGLE_LABEL) -> TrainStep:
    """The training step ``config`` asks for (the model is already on ``device``); logs what is on. The
    ``objective`` (:mod:`~vqtool.classification.training.objective`) gives the loss, the mixer and what accuracy scores."""
    amp = amp_choice(config.amp, device)
    if amp.warning:
        reporter.warn(amp.warning)
    reporter.log(amp.line())
    loss_fn, weights = objective.loss(config, train, classes, device)
    step = TrainStep(model, optimizer, schedule, loss_fn, Precision(amp.dtype, device), config.accumulate,
                     config.clip_grad, objective.mixer(config, classes),
                     WeightAverage(model, config.ema) if config.ema else None,
                     reporter if config.compile else None, objective.scored)
    for line in describe(config, step, weights, classes):
        reporter.log(line)
    return step


def describe(config: TrainConfig, step: TrainStep, weights: torch.Tensor | None, classes: list[str]) -> list[str]:
    """Log lines naming the recipe options that are on, so a run's log says how it trained."""
    lines = []
    if step.precision.scaler:
        lines.append("fp16 with a gradient scaler")
    if config.accumulate > 1:
        lines.append(f"--accumulate {config.accumulate}: an optimizer step every {config.accumulate} batches "
                     f"(effective batch {config.accumulate * config.batch_size})")
    if weights is not None:
        shown = ", ".join(f"{name} {w:.3g}" for name, w in list(zip(classes, weights.tolist()))[:10])
        lines.append(f"class weights ({config.class_weights}): {shown}{' ...' if len(classes) > 10 else ''}")
    if step.mixer:
        kinds = " and ".join(k for k, a in (("mixup", config.mixup), ("CutMix", config.cutmix)) if a)
        lines.append(f"{kinds} on the device batch: train loss is on mixed targets, train accuracy against each "
                     f"image's dominant label")
    if step.average:
        lines.append(f"--ema {config.ema}: validation, the best epoch and the checkpoint use the averaged weights")
    if config.balances_classes:
        lines.append("the best epoch is the one of the highest class-balanced val accuracy (val_balanced_top1: "
                     "the mean of the classes' recalls)")
    return lines


def prepare_network(network: nn.Module, config: TrainConfig) -> nn.Module:
    """What the training batches run through: ``network``, compiled with ``--compile``."""
    return torch.compile(network) if config.compile else network
