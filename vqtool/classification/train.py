"""The training loop and the `train` job built on it (dataset -> model -> run folder)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn

from vqtool import __version__
from vqtool.choices import AUGMENT_POLICIES, OPTIMIZERS, SCHEDULERS
from vqtool.data import DataOptions, Dataset, Split, load_dataset
from vqtool.data.pipeline import ImageInputs, Preprocess, batches, num_batches, pixel_stats, decode_split
from vqtool.compute import distributed
from vqtool.classification.checkpoint import save_checkpoint
from vqtool.compute.device import resolve_device
from vqtool.classification.inference import logits_of, logits_with
from vqtool.metrics import classification_report
from vqtool.plots import plot_curves
from vqtool.runs.folder import atomic_save, new_run_dir, read_json, write_args, write_metrics_csv
from vqtool.errors import VQError, first_line
from vqtool.models.freezing import set_train_mode
from vqtool.reporter import Reporter

STATE_FILE = "state.pt"


@dataclass
class TrainConfig:
    """Everything that shapes a training run; stored in args.json so --resume can rebuild it."""

    model: str = "smallcnn"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: str = "adam"
    scheduler: str = "onecycle"
    weight_decay: float = 0.0
    momentum: float = 0.9
    label_smoothing: float = 0.0
    augment: str = "none"
    early_stop: int = 0
    seed: int = 0
    device: str = "auto"
    imgsz: int | None = None

    def check(self) -> None:
        for name, value, choices in (("optimizer", self.optimizer, OPTIMIZERS),
                                     ("scheduler", self.scheduler, SCHEDULERS),
                                     ("augment", self.augment, AUGMENT_POLICIES)):
            if value not in choices:
                raise VQError(f"--{name} {value!r}: choose from {', '.join(choices)}", usage=True)
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise VQError("--epochs, --batch-size and --lr must be positive", usage=True)
        if not 0 <= self.label_smoothing < 1:
            raise VQError("--label-smoothing must be in [0, 1)", usage=True)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# --- the loop -------------------------------------------------------------------------------------


def make_optimizer(groups, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer(groups, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    """(scheduler, steps per batch?) — onecycle and cosine move every batch, the others every epoch."""
    total = config.epochs * steps_per_epoch
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, config.epochs // 3), gamma=0.1), False
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total)), True
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=2), False
    if config.scheduler == "onecycle":
        max_lr = [group.get("max_lr", group["lr"]) for group in optimizer.param_groups]  # a resumed cycle's peak
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(1, total)), True
    return None, False


# Drawing curves.png takes about half a second; when epochs are shorter it is redrawn at most this often
# (metrics.csv is written every epoch) and once more when training ends.
CURVES_EVERY_S = 20.0


class TrainingRun:
    """The run folder of a training job: best checkpoint, resume state, metrics CSV and curves."""

    def __init__(self, run_dir: Path, meta: dict, network: nn.Module | None = None):
        self.run_dir = Path(run_dir)
        self.meta = meta
        self.network = network  # what the checkpoint holds, when only a part of it (a head) is being fitted
        self.curves_drawn = time.monotonic()

    def save_best(self, model: nn.Module, record: dict) -> None:
        if not distributed.is_main():  # every rank holds the same weights; one writes them
            return
        save_checkpoint(self.run_dir, self.network or model,
                        {**self.meta, "metrics": {"best_epoch": record["epoch"], **record}})

    def save_state(self, state: dict, history: list[dict]) -> None:
        if not distributed.is_main():
            return
        atomic_save(self.run_dir / STATE_FILE, lambda tmp: torch.save(state, tmp))
        write_metrics_csv(self.run_dir / "metrics.csv", history)
        if time.monotonic() - self.curves_drawn >= CURVES_EVERY_S:
            self.draw_curves(history)

    def draw_curves(self, history: list[dict]) -> None:
        if distributed.is_main():
            plot_curves(self.run_dir / "curves.png", history)
            self.curves_drawn = time.monotonic()

    def load_state(self) -> dict | None:
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            reason = first_line(error) if path.stat().st_size else "the file is empty"
            raise VQError(f"{path}: cannot read the resume state ({reason})") from error


@dataclass
class FitResult:
    history: list[dict]
    best: dict
    best_state: dict
    stopped_early: bool


def fit(model: nn.Module, train: Split, val: Split | None, inputs, config: TrainConfig, *,
        reporter: Reporter, run: TrainingRun | None = None, resume: dict | None = None,
        param_groups=None, on_epoch_start=None) -> FitResult:
    """Train ``model`` on prepared splits; keeps the weights of the best validation epoch.

    ``inputs`` turns stored batches into model input (``ImageInputs`` for
    images, ``FeatureInputs`` for cached features) and owns the generator that
    shuffles and augments. ``on_epoch_start(epoch, model, optimizer)`` lets
    callers change what trains (staged unfreezing). Each epoch ends with the
    resume state written to the run folder, so an interrupted run continues
    from its last completed epoch.
    """
    device = inputs.device
    torch.manual_seed(config.seed)
    model.to(device, memory_format=torch.channels_last)
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = make_optimizer(groups, config)
    per_rank = math.ceil(len(train) / distributed.world_size())
    drop_last = per_rank > config.batch_size
    steps = num_batches(per_rank, config.batch_size, drop_last)
    scheduler, per_batch = make_scheduler(optimizer, config, steps)
    generator = inputs.generator
    if distributed.is_distributed():  # each rank augments its images with its own random stream
        generator.manual_seed(config.seed + distributed.rank())
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    history, best, best_state, bad_epochs, start = [], {"epoch": 0, "val_top1": -math.inf}, None, 0, 1

    if resume:
        model.load_state_dict(resume["model"])
        start = resume["epoch"] + 1
        if on_epoch_start:  # re-apply the staged changes of the epochs already done
            for epoch in range(1, start):
                on_epoch_start(epoch, model, optimizer)
        optimizer.load_state_dict(resume["optimizer"])
        if resume.get("planned_epochs", config.epochs) == config.epochs:
            if scheduler is not None and resume.get("scheduler"):
                scheduler.load_state_dict(resume["scheduler"])
        else:  # --epochs changed on resume: a new LR cycle over the epochs left
            scheduler, per_batch = make_scheduler(optimizer, replace(config, epochs=config.epochs - resume["epoch"]),
                                                  steps)
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        history, best, bad_epochs = resume["history"], resume["best"], resume["bad_epochs"]
        best_state = resume["best_state"]

    network, trainable = distributed.wrap(model, device), _trainable_ids(model)
    stopped_early = False
    for epoch in range(start, config.epochs + 1):
        if on_epoch_start:
            on_epoch_start(epoch, model, optimizer)
            if _trainable_ids(model) != trainable:  # DDP syncs the gradients of what trained when it was wrapped
                network, trainable = distributed.wrap(model, device), _trainable_ids(model)
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]  # the head's, when the backbone has a group of its own
        epoch_batches = _epoch_batches(train, config, generator, epoch, drop_last)
        train_loss, train_top1 = _train_epoch(network, epoch_batches, optimizer, scheduler if per_batch else None,
                                              loss_fn, inputs, steps, reporter, f"epoch {epoch}/{config.epochs}")
        seconds = time.perf_counter() - started
        record = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_top1": train_top1,
                  "val_loss": None, "val_top1": None, "seconds": round(seconds, 3),
                  "images_per_second": round(distributed.world_size() * steps * config.batch_size / seconds
                                             if drop_last else len(train) / seconds, 1)}
        if val is not None:
            record["val_loss"], record["val_top1"] = validate(model, val, inputs, max(256, config.batch_size))
        if scheduler is not None and not per_batch:
            if config.scheduler == "plateau":
                scheduler.step(record["val_loss"] if val is not None else train_loss)
            else:
                scheduler.step()
        history.append(record)
        improved = val is None or _better(record, best)
        if improved:
            best = dict(record)
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            bad_epochs = 0
            if run:
                run.save_best(model, record)
        else:
            bad_epochs += 1
        reporter.log(format_epoch(record, config.epochs))
        if run:
            run.save_state({"epoch": epoch, "planned_epochs": config.epochs, "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict() if scheduler is not None else None,
                            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                            "history": history, "best": best, "bad_epochs": bad_epochs,
                            "best_state": best_state}, history)
        if config.early_stop and bad_epochs >= config.early_stop:
            reporter.log(f"early stop: no val improvement for {bad_epochs} epochs (best epoch {best['epoch']})")
            stopped_early = True
            break
    if run:
        run.draw_curves(history)
    model.load_state_dict(best_state)
    return FitResult(history=history, best=best, best_state=best_state, stopped_early=stopped_early)


def _better(record: dict, best: dict) -> bool:
    """Higher val accuracy, or the same with a lower val loss (small val sets often tie on accuracy)."""
    return (record["val_top1"], -record["val_loss"]) > (best["val_top1"], -best.get("val_loss", math.inf))


def _trainable_ids(model: nn.Module) -> frozenset:
    return frozenset(id(p) for p in model.parameters() if p.requires_grad)


def _epoch_batches(train: Split, config: TrainConfig, generator, epoch: int, drop_last: bool):
    """This epoch's shuffled batches: of the whole split, or of this rank's DistributedSampler shard."""
    if distributed.is_distributed():
        local = train.subset(distributed.shard(len(train), epoch=epoch, seed=config.seed, shuffle=True))
        return batches(local, config.batch_size, drop_last=drop_last)
    return batches(train, config.batch_size, shuffle=True, generator=generator, drop_last=drop_last)


def _train_epoch(network, epoch_batches, optimizer, batch_scheduler, loss_fn, inputs, steps, reporter, description):
    """(mean loss, accuracy) over the epoch's training batches, of every rank."""
    set_train_mode(network)
    sums = torch.zeros(3, device=inputs.device, dtype=torch.float64)  # loss sum, correct, seen
    with reporter.progress(description, steps) as advance:
        for stored, labels in epoch_batches:
            x = inputs.train(stored)
            y = labels.to(inputs.device, non_blocking=True)
            logits = network(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if batch_scheduler is not None:
                batch_scheduler.step()
            sums += torch.stack([loss.detach().double() * len(y), (logits.detach().argmax(1) == y).sum().double(),
                                 torch.tensor(len(y), device=inputs.device, dtype=torch.float64)])
            advance()
    loss_sum, correct, seen = distributed.total(sums).tolist()
    if not math.isfinite(loss_sum):
        raise VQError("training diverged (loss is not finite); try a lower --lr")
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def validate(model: nn.Module, val: Split, inputs, batch_size: int) -> tuple[float, float]:
    """(loss, top-1 accuracy) over the whole val split; with several ranks each scores a share, then sums."""
    if distributed.is_distributed():
        val = val.subset(torch.arange(distributed.rank(), len(val), distributed.world_size()))
    sums = torch.zeros(3, dtype=torch.float64)
    if len(val):
        logits = logits_with(model, val, inputs.eval, batch_size)
        sums += torch.tensor([nn.functional.cross_entropy(logits, val.labels, reduction="sum").item(),
                              (logits.argmax(1) == val.labels).sum().item(), len(val)], dtype=torch.float64)
    loss_sum, correct, count = distributed.total(sums.to(inputs.device)).tolist()
    return loss_sum / count, correct / count


def format_epoch(record: dict, epochs: int) -> str:
    line = (f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}  "
            f"train loss {record['train_loss']:.4f} acc {record['train_top1']:.4f}")
    if record["val_top1"] is not None:
        line += f"  val loss {record['val_loss']:.4f} acc {record['val_top1']:.4f}"
    return line + f"  lr {record['lr']:.2e}  {record['seconds']:.1f}s"


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


# --- the job --------------------------------------------------------------------------------------


def choose_preprocess(entry, dataset: Dataset, imgsz: int | None) -> Preprocess:
    """Input size and channels for training ``entry`` from scratch on ``dataset``."""
    if imgsz:
        size = imgsz
    elif entry.fixed_size or dataset.native_size is None:
        size = entry.input_size
    else:  # small uniform images (CIFAR-style) train at their own size, large ones at the model's
        size = max(min(dataset.native_size, entry.input_size), entry.min_size)
    if entry.fixed_size and size != entry.input_size:
        raise VQError(f"{entry.name} takes {entry.input_size}px input only (got --imgsz {size})", usage=True)
    if size < entry.min_size:
        raise VQError(f"{entry.name} needs at least {entry.min_size}px input (got {size})", usage=True)
    channels = dataset.channels
    neutral = (0.5,) * channels
    return Preprocess(size=size, channels=channels, mean=dataset.mean or neutral, std=dataset.std or neutral)


def prepare_splits(dataset: Dataset, preprocess: Preprocess, data: DataOptions, reporter: Reporter) -> dict[str, Split]:
    prepared = {}
    for name in ("train", "val", "test"):
        split = dataset.split(name) if name == "train" else getattr(dataset, name)  # no train split: one line
        if split is not None:
            prepared[name] = decode_split(split, preprocess, strict=data.strict, reporter=reporter, workers=data.workers,
                                          name=name, classes=dataset.classes, every_class=name == "train")
    return prepared


def train_job(dataset_spec: str, data: DataOptions, config: TrainConfig, *, reporter: Reporter,
              out_dir: str | None = None, lr_find: bool = False) -> dict:
    """Load, train, test and save; returns the summary document (or the LR range test's, with ``lr_find``)."""
    from vqtool.registry import get_model

    started = time.perf_counter()
    config.check()
    if lr_find:
        refuse_distributed_lr_find()
    distributed.join(resolve_device(config.device))
    dataset = load_dataset(dataset_spec, data)
    entry = get_model(config.model)
    preprocess = choose_preprocess(entry, dataset, config.imgsz)
    splits = prepare_splits(dataset, preprocess, data, reporter)
    if dataset.mean is None:
        mean, std = pixel_stats(splits["train"].pixels)
        preprocess = Preprocess(**{**preprocess.to_dict(), "mean": mean, "std": std})
    torch.manual_seed(config.seed)  # the initial weights are part of what --seed reproduces
    model = entry.build(len(dataset.classes), preprocess.channels)
    if lr_find:
        from vqtool.classification.lr_find import find_lr

        return find_lr(model, splits["train"], image_inputs(preprocess, dataset, config), config, reporter=reporter,
                       out_dir=out_dir)
    run_dir = distributed.main_run_dir(lambda: start_run_dir("train", out_dir, {
        "dataset": dataset_spec, "data": asdict(data), "config": asdict(config)}))
    meta = {"task": "classification", "architecture": entry.name, "num_classes": len(dataset.classes),
            "in_channels": preprocess.channels, "classes": dataset.classes, "preprocess": preprocess.to_dict(),
            "dataset": dataset.spec, "train_args": asdict(config)}
    return _run(model, dataset, splits, preprocess, config, meta, run_dir, reporter, started, resume=None)


def refuse_distributed_lr_find() -> None:
    if distributed.is_distributed():
        raise VQError("--lr-find runs in one process; start it without torchrun", usage=True)


def start_run_dir(command: str, out_dir: str | None, args: dict) -> Path:
    """A new run folder holding args.json."""
    run_dir = new_run_dir(command, out_dir)
    write_args(run_dir, command, args)
    return run_dir


def resumable(run_dir: str, command: str, epochs: int | None) -> tuple[dict, TrainConfig, dict]:
    """(recorded arguments, config with ``epochs`` applied, resume state) of an interrupted ``command`` run."""
    run_path = Path(run_dir)
    if not (run_path / "args.json").is_file():
        raise VQError(f"{run_dir}: not a vqtool run folder (no args.json)", usage=True)
    document = read_json(run_path / "args.json")
    if document.get("command") != command:
        raise VQError(f"{run_dir}: a {document.get('command')} run; continue it with vqtool "
                      f"{document.get('command')} --resume {run_dir}", usage=True)
    config = TrainConfig.from_dict(document["args"]["config"])
    config.epochs = epochs or config.epochs
    state = TrainingRun(run_path, {}).load_state()
    if state is None:
        raise VQError(f"{run_dir}: no completed epoch to resume from; start it again")
    if state["epoch"] >= config.epochs:
        raise VQError(f"{run_dir}: already finished {state['epoch']} of {config.epochs} epochs "
                      f"(pass --epochs N to train further)", usage=True)
    return document["args"], config, state


def resume_job(run_dir: str, *, reporter: Reporter, epochs: int | None = None) -> dict:
    """Continue an interrupted run from its last completed epoch."""
    from vqtool.registry import get_model

    started = time.perf_counter()
    run_path = Path(run_dir)
    recorded, config, state = resumable(run_dir, "train", epochs)
    distributed.join(resolve_device(config.device))
    data = DataOptions(**recorded["data"])
    from vqtool.classification.checkpoint import read_meta

    meta = {k: v for k, v in read_meta(run_path).items() if k not in ("format", "format_version", "metrics",
                                                                        "vqtool_version", "created")}
    meta["train_args"] = asdict(config)
    dataset = load_dataset(recorded["dataset"], data)
    preprocess = Preprocess.from_dict(meta["preprocess"])
    splits = prepare_splits(dataset, preprocess, data, reporter)
    model = get_model(config.model).build(meta["num_classes"], meta["in_channels"])
    reporter.log(f"resuming {run_dir} after epoch {state['epoch']}")
    return _run(model, dataset, splits, preprocess, config, meta, run_path, reporter, started, resume=state)


def _run(model, dataset, splits, preprocess, config, meta, run_dir, reporter, started, resume):
    run = TrainingRun(run_dir, meta)
    n_params = sum(p.numel() for p in model.parameters())
    reporter.log(f"training {meta['architecture']} ({n_params:,} parameters) on {dataset.name}: "
            f"{len(splits['train'])} train, {len(splits.get('val', ()))} val images at "
            f"{preprocess.size}px; {global_batch(config)}; run folder {run_dir}")
    result = fit(model, splits["train"], splits.get("val"), image_inputs(preprocess, dataset, config), config,
                 reporter=reporter, run=run, resume=resume)
    return finish(model, result, dataset, splits, preprocess, config, run, started)


def image_inputs(preprocess: Preprocess, dataset: Dataset, config: TrainConfig) -> ImageInputs:
    """The input side of a run on images: the training options' device, augmentation and seed."""
    return ImageInputs(preprocess, resolve_device(config.device), augment=config.augment, flips=dataset.flips,
                       seed=config.seed)


def global_batch(config: TrainConfig) -> str:
    size = distributed.world_size()
    if size == 1:
        return f"batch {config.batch_size}"
    return f"global batch {size * config.batch_size} ({size} processes x --batch-size {config.batch_size})"


def finish(model: nn.Module, result: FitResult, dataset: Dataset, splits: dict[str, Split], preprocess: Preprocess,
           config: TrainConfig, run: TrainingRun, started: float) -> dict:
    """Test the best weights when there is a test split, write the final checkpoint; the summary document."""
    summary = summarize(result, config, run.run_dir)
    if "test" in splits:
        device = resolve_device(config.device)
        logits = logits_of(model, splits["test"], preprocess, device, max(256, config.batch_size))
        report = classification_report(logits, splits["test"].labels, dataset.classes)
        summary["test_top1"], summary["test_loss"] = report["top1"], report["loss"]
    run.save_best(model.cpu(), {**result.best, **{k: summary[k] for k in ("test_top1",) if k in summary}})
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


def summarize(result: FitResult, config: TrainConfig, run_dir: Path) -> dict:
    best = result.best
    hint = diagnose(result.history)
    return {
        "run_dir": str(run_dir),
        "checkpoint": str(Path(run_dir) / "model.safetensors"),
        "model": config.model,
        "epochs": len(result.history),
        "best_epoch": best["epoch"],
        "stopped_early": result.stopped_early,
        "train_loss": best["train_loss"],
        "train_top1": best["train_top1"],
        "val_loss": best["val_loss"],
        "val_top1": best["val_top1"] if best["val_loss"] is not None else None,
        "images_per_second": round(sum(r["images_per_second"] for r in result.history) / len(result.history), 1),
        "overfitting": bool(hint and hint.startswith("overfitting")),
        "hint": hint,
        "vqtool_version": __version__,
    }
