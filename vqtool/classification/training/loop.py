"""The training loop: epochs over prepared splits, the best validation epoch kept, each epoch committed."""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from vqtool.classification.config import TrainConfig, make_optimizer
from vqtool.classification.training.ema import weights_of
from vqtool.classification.training.imbalance import balanced_order
from vqtool.classification.inference.logits import logits_with
from vqtool.classification.training.objective import SINGLE_LABEL
from vqtool.classification.training.schedule import Schedule
from vqtool.classification.training.steps import TrainStep, make_train_step, prepare_network
from vqtool.classification.training.run import ResumeState, TrainingRun
from vqtool.compute import distributed
from vqtool.data import Split
from vqtool.data.pipeline import batches, num_batches
from vqtool.errors import VQError
from vqtool.models.freezing import set_train_mode
from vqtool.reporter import SILENT, Reporter

# Who hears of each committed epoch: ``listener(record, val_predictions)`` (vqtool tune's pruner). A context variable,
# set with :func:`epoch_listener`, so that no job's signature carries it; a listener may raise to stop the run.
_EPOCH_LISTENER: contextvars.ContextVar = contextvars.ContextVar("epoch_listener", default=None)


@dataclass
class FitResult:
    """What a fit ended with: its progress, whose ``best_state`` the model now holds."""

    state: ResumeState

    @property
    def history(self) -> list[dict]:
        return self.state.history

    @property
    def best(self) -> dict:
        return self.state.best

    @property
    def stopped_early(self) -> bool:
        return self.state.stopped_early


@dataclass
class Trainer:
    """The objects one fit moves forward: what trains, how, and on which batches."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Schedule
    steps: int  # batches per epoch, per process
    drop_last: bool
    step: TrainStep  # what each batch does (loss, backward, optimizer step, EMA)
    inputs: object  # ImageInputs or FeatureInputs
    objective: object = SINGLE_LABEL  # the loss and the metrics (vqtool.classification.training.objective)

    @property
    def generator(self) -> torch.Generator:
        return self.inputs.generator

    @property
    def evaluated(self) -> nn.Module:
        """What is validated and kept as the best epoch: the weight average with --ema, else the model."""
        return self.step.average.module if self.step.average is not None else self.model


def fit(model: nn.Module, train: Split, val: Split | None, inputs, config: TrainConfig, *,
        reporter: Reporter, run: TrainingRun | None = None, resume: ResumeState | None = None,
        param_groups=None, on_epoch_start=None, classes: list[str] | None = None,
        objective=SINGLE_LABEL) -> FitResult:
    """Train ``model`` on prepared splits; keeps the weights of the best validation epoch.

    ``inputs`` turns stored batches into model input (``ImageInputs`` for
    images, ``FeatureInputs`` for cached features) and owns the generator that
    shuffles and augments. ``on_epoch_start(epoch, model, optimizer)`` lets
    callers change what trains (staged unfreezing). Each epoch ends with one
    commit to the run folder, so an interrupted run continues from its last
    completed epoch. ``classes`` names the labels (for --class-weights FILE). ``objective`` is what is
    optimised and measured (single-label by default; see :mod:`~vqtool.classification.training.objective`).
    """
    # Restore: a fresh start, or an interrupted run's weights, optimizer, schedule and random streams.
    trainer = make_trainer(model, train, inputs, config, param_groups, classes, reporter, objective)
    state = ResumeState(planned_epochs=config.epochs)
    if resume:
        state = restore(trainer, resume, config, on_epoch_start, reporter)
    else:
        reporter.log(trainer.scheduler.describe())
    network, trainable = prepare_network(distributed.wrap(model, inputs.device), config), _trainable_ids(model)
    first = config.epochs + 1 if state.stopped_early else state.epoch + 1
    for epoch in range(first, config.epochs + 1):
        # Epoch: staged changes first (DDP syncs the gradients of what trained when it was wrapped).
        if on_epoch_start:
            on_epoch_start(epoch, model, trainer.optimizer)
            if _trainable_ids(model) != trainable:
                network = prepare_network(distributed.wrap(model, inputs.device), config)
                trainable = _trainable_ids(model)
        record = run_epoch(trainer, network, train, val, config, epoch, reporter)
        # Record: the best epoch's weights are kept in memory, and in the run folder below.
        improved = state.add(record, trainer.evaluated, has_val=val is not None, key=objective.selection(config))
        reporter.log(format_epoch(record, config.epochs, trainer.step.precision.name))
        # Stop: early stopping once val has not improved for --early-stop epochs.
        state.stopped_early = bool(config.early_stop and state.bad_epochs >= config.early_stop)
        # Checkpoint: this epoch's files, committed together (curves with the last epoch).
        if run:
            state.capture(model, trainer.optimizer, trainer.scheduler, trainer.generator, trainer.step.state_dict())
            with weights_of(trainer.step.average if improved else None, model):  # the checkpoint holds the EMA
                run.commit(state, best_model=model if improved else None,
                           last=state.stopped_early or epoch == config.epochs)
        _tell_listener(record, trainer, val, config)
        if state.stopped_early:
            reporter.log(f"early stop: no val improvement for {state.bad_epochs} epochs "
                         f"(best epoch {state.best['epoch']})")
            break
    model.load_state_dict(state.best_state)
    return FitResult(state)


@contextlib.contextmanager
def epoch_listener(listener):
    """Within the block, every fit calls ``listener(record, val_predictions)`` after each epoch's commit;
    ``val_predictions()`` returns (val logits, val labels) of the weights just validated."""
    token = _EPOCH_LISTENER.set(listener)
    try:
        yield
    finally:
        _EPOCH_LISTENER.reset(token)


def _tell_listener(record: dict, trainer: Trainer, val: Split | None, config: TrainConfig) -> None:
    listener = _EPOCH_LISTENER.get()
    if listener is None:
        return

    def val_predictions():
        with trainer.step.precision.autocast():
            logits = logits_with(trainer.evaluated, val, trainer.inputs.eval, max(256, config.batch_size))
        return logits.float(), val.labels

    listener(record, val_predictions if val is not None else None)


def make_trainer(model: nn.Module, train: Split, inputs, config: TrainConfig, param_groups=None,
                 classes: list[str] | None = None, reporter: Reporter | None = None,
                 objective=SINGLE_LABEL) -> Trainer:
    """The optimizer, LR schedule, training step and batches per epoch of a fresh run (random streams seeded)."""
    torch.manual_seed(config.seed)
    model.to(inputs.device, memory_format=torch.channels_last)
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = make_optimizer(groups, config)
    per_rank = math.ceil(len(train) / distributed.world_size())
    drop_last = per_rank > config.batch_size
    steps = num_batches(per_rank, config.batch_size, drop_last)
    schedule = Schedule(optimizer, config, math.ceil(steps / config.accumulate))  # stepped per optimizer step
    if distributed.is_distributed():  # each rank augments its images with its own random stream
        inputs.generator.manual_seed(config.seed + distributed.rank())
    classes = classes or [str(i) for i in range(int(train.labels.max()) + 1)]
    step = make_train_step(model, optimizer, schedule, train, classes, inputs.device, config, reporter or SILENT,
                           objective)
    return Trainer(model, optimizer, schedule, steps, drop_last, step, inputs, objective)


def restore(trainer: Trainer, resume: ResumeState, config: TrainConfig, on_epoch_start,
            reporter: Reporter) -> ResumeState:
    """Put ``trainer`` back where ``resume`` left off; the progress to continue from."""
    trainer.model.load_state_dict(resume.model)
    if on_epoch_start:  # re-apply the staged changes of the epochs already done
        for epoch in range(1, resume.epoch + 1):
            on_epoch_start(epoch, trainer.model, trainer.optimizer)
    trainer.optimizer.load_state_dict(resume.optimizer)
    trainer.step.load_state_dict(resume.recipe)
    if resume.planned_epochs == config.epochs:
        if resume.scheduler:
            trainer.scheduler.load_state_dict(resume.scheduler)
    elif resume.epoch < config.epochs:  # --epochs extends the run: a schedule of its own over the new epochs
        left = config.epochs - resume.epoch
        trainer.scheduler = trainer.step.schedule = Schedule(
            trainer.optimizer, config, math.ceil(trainer.steps / config.accumulate), left, warmup=False)
        if trainer.scheduler.inner is not None:
            reporter.log(f"--epochs {config.epochs}: a new {config.scheduler} schedule over epochs "
                         f"{resume.epoch + 1}-{config.epochs}, from lr {trainer.optimizer.param_groups[0]['lr']:.2e}")
        resume.planned_epochs, resume.stopped_early, resume.bad_epochs = config.epochs, False, 0
    trainer.generator.set_state(resume.generator)
    torch.set_rng_state(resume.torch_rng)
    return resume


def run_epoch(trainer: Trainer, network, train: Split, val: Split | None, config: TrainConfig, epoch: int,
              reporter: Reporter) -> dict:
    """Train one epoch, validate, step an epoch-wise schedule; the epoch's metrics record."""
    started = time.perf_counter()
    # the epoch's starting rates: "lr" the first group's (the head's, when the backbone has a group of its own)
    lrs = {"lr": trainer.optimizer.param_groups[0]["lr"], **other_group_lrs(trainer.optimizer)}
    train_loss, train_top1 = _train_epoch(trainer, network, _epoch_batches(train, config, trainer, epoch),
                                          reporter, f"epoch {epoch}/{config.epochs}")
    seconds = time.perf_counter() - started
    images = distributed.world_size() * trainer.steps * config.batch_size if trainer.drop_last else len(train)
    record = {"epoch": epoch, **lrs, "train_loss": train_loss, "train_top1": train_top1,
              "val_loss": None, "val_top1": None, "seconds": round(seconds, 3),
              "images_per_second": round(images / seconds, 1)}
    if getattr(trainer.inputs, "head_only", False):  # on cached features: say whose time and speed these are
        record["head_seconds"], record["head_images_per_second"] = record.pop("seconds"), record.pop("images_per_second")
    if val is not None:
        with trainer.step.precision.autocast():
            record.update(trainer.objective.validate(trainer.evaluated, val, trainer.inputs,
                                                     max(256, config.batch_size)))
        if not math.isfinite(record["val_loss"]):
            raise VQError(f"training diverged at epoch {epoch}: val loss is {record['val_loss']} (train loss "
                          f"{train_loss:.4g}); try a lower --lr")
    trainer.scheduler.after_epoch(record["val_loss"] if val is not None else train_loss)
    return record


def other_group_lrs(optimizer) -> dict:
    """The epoch's learning rates of the parameter groups after the first, as ``lr_<group name>`` columns."""
    return {f"lr_{group.get('name', index)}": group["lr"] for index, group in enumerate(optimizer.param_groups[1:], 1)}


def _trainable_ids(model: nn.Module) -> frozenset:
    return frozenset(id(p) for p in model.parameters() if p.requires_grad)


def _epoch_batches(train: Split, config: TrainConfig, trainer: Trainer, epoch: int):
    """This epoch's shuffled batches: of the whole split, or of this rank's DistributedSampler shard (with
    --balanced-sampler: drawn class-balanced, each rank its own draw)."""
    pin = trainer.inputs.device.type == "cuda"  # a pinned batch is copied to the GPU asynchronously
    if config.balanced_sampler:
        order = balanced_order(train.labels, trainer.generator, math.ceil(len(train) / distributed.world_size()))
        return batches(train, config.batch_size, order=order, drop_last=trainer.drop_last, pin=pin)
    if distributed.is_distributed():
        return batches(train, config.batch_size, order=distributed.shard(len(train), epoch=epoch, seed=config.seed,
                                                                         shuffle=True),
                       drop_last=trainer.drop_last, pin=pin)
    return batches(train, config.batch_size, shuffle=True, generator=trainer.generator, drop_last=trainer.drop_last,
                   pin=pin)


def _train_epoch(trainer: Trainer, network, epoch_batches, reporter: Reporter, description: str):
    """(mean loss, accuracy) over the epoch's training batches, of every rank."""
    set_train_mode(network)
    device = trainer.inputs.device
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # loss sum, images, correct, answers
    trainer.step.start_epoch(trainer.generator)
    with reporter.progress(description, trainer.steps) as advance:
        for index, (stored, labels) in enumerate(epoch_batches):
            x = trainer.inputs.train(stored)
            loss, logits, y = trainer.step(network, x, labels.to(device, non_blocking=True), index, trainer.steps)
            correct, answers = trainer.objective.correct(logits.detach(), y)  # a multi-label image: one per label
            sums += torch.stack([loss.detach().double() * len(y), torch.tensor(len(y), device=device,
                                 dtype=torch.float64), correct, torch.tensor(answers, device=device,
                                                                              dtype=torch.float64)])
            advance()
    loss_sum, seen, correct, answers = distributed.total(sums).tolist()
    if not math.isfinite(loss_sum):
        raise VQError("training diverged (loss is not finite); try a lower --lr")
    return loss_sum / max(seen, 1), correct / max(answers, 1)


def format_epoch(record: dict, epochs: int, precision: str = "fp32") -> str:
    line = (f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}  "
            f"train loss {record['train_loss']:.4f} acc {record['train_top1']:.4f}")
    if record["val_top1"] is not None:
        line += f"  val loss {record['val_loss']:.4f} acc {record['val_top1']:.4f}"
    if "head_seconds" in record:
        return line + (f"  lr {record['lr']:.2e}  head only {record['head_seconds']:.2f} s "
                       f"({record['head_images_per_second']:,.0f} img/s on cached features, {precision})")
    return line + f"  lr {record['lr']:.2e}  {record['seconds']:.1f}s {precision}"
