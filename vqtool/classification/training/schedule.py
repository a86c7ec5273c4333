"""A run's LR schedule: an optional linear warm-up, then the chosen scheduler.

The warm-up raises every parameter group's LR linearly from ``WARMUP_START`` of
the scheduler's starting LR to that LR over ``--warmup-epochs`` epochs of
optimizer steps; the scheduler (made over the epochs after the warm-up) is not
stepped meanwhile, so it starts where it would have without one. This works
the same for every scheduler, whether it moves per optimizer step (cosine,
onecycle) or per epoch (step, plateau).
"""

from __future__ import annotations

from vqtool.classification.config import TrainConfig, make_scheduler
from vqtool.reporter import plural

WARMUP_START = 0.01  # the first warm-up step trains at 1 % of the LR


class Schedule:
    """The LR schedule the loop steps: :meth:`after_step` after each optimizer step, :meth:`after_epoch` after
    each epoch (with the val loss, for plateau)."""

    def __init__(self, optimizer, config: TrainConfig, steps_per_epoch: int, epochs: int | None = None, *,
                 warmup: bool = True):
        epochs = epochs or config.epochs
        self.optimizer = optimizer
        self.plateau = config.scheduler == "plateau"
        self.warmup_epochs = config.warmup_epochs if warmup else 0
        self.warmup_steps = self.warmup_epochs * steps_per_epoch
        self.inner, self.per_step = make_scheduler(optimizer, config, steps_per_epoch, epochs - self.warmup_epochs)
        self.steps = self.epochs = 0  # optimizer steps and epochs seen
        # the LR each group reaches at the warm-up's end: where the scheduler starts
        self.targets = [group["lr"] for group in optimizer.param_groups]
        if self.warmup_steps:
            self._set_warmup_lr()

    def describe(self) -> str:
        """One log line saying where the LR goes: why the first epoch's `lr` is far below the peak."""
        group = self.optimizer.param_groups[0]
        target = self.targets[0]
        if self.inner is None:
            course = f"constant {target:.2e}"
        elif "max_lr" in group:  # one-cycle: rises from its initial LR to the peak, then anneals
            ratio = group["max_lr"] / group["initial_lr"]
            course = (f"one-cycle from {group['initial_lr']:.2e} (the peak / {ratio:.0f}) up to the peak "
                      f"{group['max_lr']:.2e} at 30 % of its steps, then down to {group['min_lr']:.1e}")
        else:
            course = {"CosineAnnealingLR": f"cosine from {target:.2e} down to 0",
                      "StepLR": f"{target:.2e}, ×0.1 every {plural(getattr(self.inner, 'step_size', 1), 'epoch')}",
                      "ReduceLROnPlateau": f"{target:.2e}, ×0.1 after 2 epochs without val improvement"
                      }.get(type(self.inner).__name__, f"{type(self.inner).__name__} from {target:.2e}")
        warmup = (f"a linear warm-up from {target * WARMUP_START:.2e} to {target:.2e} over {self.warmup_epochs} "
                  f"epoch{'s' if self.warmup_epochs != 1 else ''}, then " if self.warmup_steps else "")
        return f"LR schedule: {warmup}{course} (each epoch line shows the LR of its first step)"

    @property
    def warming_up(self) -> bool:
        return self.steps < self.warmup_steps

    def _set_warmup_lr(self) -> None:
        factor = WARMUP_START + (1 - WARMUP_START) * self.steps / self.warmup_steps
        for group, target in zip(self.optimizer.param_groups, self.targets):
            group["lr"] = target * factor

    def after_step(self) -> None:
        warming_up = self.warming_up
        self.steps += 1
        if warming_up:
            self._set_warmup_lr()
        elif self.per_step and self.inner is not None:
            self.inner.step()

    def after_epoch(self, val_loss: float | None = None) -> None:
        self.epochs += 1
        if self.per_step or self.inner is None or self.epochs <= self.warmup_epochs:
            return
        if self.plateau:
            self.inner.step(val_loss)
        else:
            self.inner.step()

    def state_dict(self) -> dict:
        return {"steps": self.steps, "epochs": self.epochs, "targets": list(self.targets),
                "inner": self.inner.state_dict() if self.inner is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if "inner" not in state:  # a state.pt of vqtool before warm-up: the scheduler's own state
            state = {"steps": self.warmup_steps, "epochs": self.warmup_epochs, "targets": self.targets,
                     "inner": state}
        self.steps, self.epochs, self.targets = state["steps"], state["epochs"], list(state["targets"])
        if self.inner is not None and state["inner"] is not None:
            self.inner.load_state_dict(state["inner"])
