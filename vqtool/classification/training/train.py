"""The `train` job: dataset -> model -> training loop -> run folder, and --resume of such a run.

The pieces it is built from: :mod:`~vqtool.classification.config` (options,
optimizer, LR schedule), :mod:`~vqtool.classification.training.loop` (the epochs),
:mod:`~vqtool.classification.training.run` (the run folder and its resume
state) and :mod:`~vqtool.classification.training.hints` (what the curves suggest).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from vqtool import __version__
from vqtool.classification.config import TrainConfig
from vqtool.classification.training.ema import checkpoint_meta
from vqtool.classification.training.hints import diagnose
from vqtool.classification.training.imbalance import imbalance_hint
from vqtool.classification.inference.logits import logits_of
from vqtool.classification.training.loop import FitResult, fit
from vqtool.classification.training.objective import SINGLE_LABEL
from vqtool.classification.training.run_lifecycle import final_figures, finish_run, start_run
from vqtool.classification.training.run import ResumeState, TrainingRun, training_status
from vqtool.compute import distributed
from vqtool.compute.device import resolve_device
from vqtool.data import DataOptions, Dataset, Split
from vqtool.data.pipeline import ImageInputs, Preprocess, decode_split, pixel_stats
from vqtool.data.digests import leak_hint
from vqtool.data.store import remembered
from vqtool.errors import VQError
from vqtool.metrics import classification_report
from vqtool.reporter import Reporter
from vqtool.runs.folder import new_run_dir, run_arguments, write_args
from vqtool.runs.trackers import TrackingOptions, check_resumed


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
    if len(dataset.classes) < 2:  # every prediction is right: the figures would say nothing
        reporter.warn(f"{dataset.name} has a single class ({', '.join(map(str, dataset.classes))}): a classifier "
                      f"learns nothing from it and its accuracy of 1.0 means nothing; give it two classes or more")
    prepared = {}
    for name in ("train", "val", "test"):
        split = dataset.split(name) if name == "train" else getattr(dataset, name)  # no train split: one line
        if split is not None:
            prepared[name] = decode_split(split, preprocess, strict=data.strict, reporter=reporter, workers=data.workers,
                                          name=name, classes=dataset.classes if split.labels.ndim == 1 else None,
                                          every_class=name == "train",
                                          store=data.cache_store)
    if hint := leak_hint(prepared, dataset.spec.get("path", dataset.name)):
        reporter.warn(hint)
    return prepared


def train_job(dataset_spec: str, data: DataOptions, config: TrainConfig, *, reporter: Reporter,
              out_dir: str | None = None, lr_find: bool = False, tracking: TrackingOptions | None = None,
              objective=SINGLE_LABEL) -> dict:
    """Load, train, test and save; returns the summary document (or the LR range test's, with ``lr_find``).
    ``objective``: what is trained for (:mod:`~vqtool.classification.training.objective`)."""
    from vqtool.registry import get_model

    started = time.perf_counter()  # ``config`` was checked before torch loaded (the task's entry point)
    if tracking:
        tracking.check()
    if lr_find:
        refuse_distributed_lr_find()
    distributed.join(resolve_device(config.device))
    dataset = objective.load(dataset_spec, data)
    entry = get_model(config.model)
    preprocess = choose_preprocess(entry, dataset, config.imgsz)
    splits = prepare_splits(dataset, preprocess, data, reporter)
    if dataset.mean is None:
        mean, std = (tuple(v) for v in remembered(splits["train"].pixels, "stats", pixel_stats))
        preprocess = Preprocess(**{**preprocess.to_dict(), "mean": mean, "std": std})
    torch.manual_seed(config.seed)  # the initial weights are part of what --seed reproduces
    model = entry.build(len(dataset.classes), preprocess.channels)
    if lr_find:
        from vqtool.classification.training.lr_find import find_lr

        return find_lr(model, splits["train"], image_inputs(preprocess, dataset, config), config, reporter=reporter,
                       out_dir=out_dir)
    run_dir = distributed.main_run_dir(lambda: start_run_dir("train", out_dir, {
        "dataset": dataset_spec, "data": asdict(data), "config": asdict(config)}, objective))
    meta = {"task": objective.task, "architecture": entry.name, "num_classes": len(dataset.classes),
            "in_channels": preprocess.channels, "classes": dataset.classes, "preprocess": preprocess.to_dict(),
            "dataset": dataset.record(), "train_args": asdict(config),
            **checkpoint_meta(config.ema)}
    return _run(model, dataset, splits, preprocess, config, meta, run_dir, reporter, started, resume=None,
                tracking=tracking, objective=objective)


def refuse_distributed_lr_find() -> None:
    if distributed.is_distributed():
        raise VQError("--lr-find runs in one process; start it without torchrun", usage=True)


def start_run_dir(command: str, out_dir: str | None, args: dict, objective) -> Path:
    """A new run folder holding args.json: ``args``, the objective's task and its own options (what `--config
    RUN/args.json` reads back to train the same task, and --resume to rebuild the objective)."""
    run_dir = new_run_dir(command, out_dir)
    write_args(run_dir, command, {**args, "task": objective.task, **objective.record()})
    return run_dir


def resumable(run_dir: str, command: str, epochs: int | None) -> tuple[dict, TrainConfig, ResumeState]:
    """(recorded arguments, config with ``epochs`` applied, resume state) of an interrupted ``command`` run."""
    run_path = Path(run_dir)
    document = run_arguments(run_dir, command)
    config = TrainConfig.from_dict(document["args"]["config"])
    config.epochs = epochs or config.epochs
    state = TrainingRun(run_path, {}).load_state()
    if state is None:
        raise VQError(f"{run_dir}: no completed epoch to resume from; start it again")
    if config.epochs < state.epoch:
        raise VQError(f"--epochs {config.epochs}: {run_dir} has already trained {state.epoch} epochs", usage=True)
    if state.finished and (state.epoch == config.epochs or config.epochs == state.planned_epochs):
        how = f"stopped early after {state.epoch} of" if state.stopped_early else f"already finished {state.epoch} of"
        raise VQError(f"{run_dir}: {how} {config.epochs} epochs (pass --epochs N to train further)", usage=True)
    return document["args"], config, state


def resuming(run_dir, state: ResumeState, config: TrainConfig) -> str:
    """The log line that says what a resumed run does next."""
    if state.epoch < config.epochs and (not state.stopped_early or state.planned_epochs != config.epochs):
        return f"resuming {run_dir} after epoch {state.epoch}"
    return f"resuming {run_dir}: training ended after epoch {state.epoch}; writing the final checkpoint"


def resume_job(run_dir: str, *, reporter: Reporter, epochs: int | None = None,
               tracking: TrackingOptions | None = None, objective=SINGLE_LABEL) -> dict:
    """Continue an interrupted run from its last completed epoch (and the trackers it was logged to)."""
    from vqtool.classification.checkpoints.format import read_meta
    from vqtool.registry import get_model

    started = time.perf_counter()
    run_path = Path(run_dir)
    recorded, config, state = resumable(run_dir, "train", epochs)
    check_resumed(tracking, run_path)
    distributed.join(resolve_device(config.device))
    data = DataOptions(**recorded["data"])
    meta = {k: v for k, v in read_meta(run_path).items() if k not in ("format", "format_version", "metrics",
                                                                        "vqtool_version", "created")}
    meta["train_args"] = asdict(config)
    dataset = objective.load(recorded["dataset"], data)
    preprocess = Preprocess.from_dict(meta["preprocess"])
    splits = prepare_splits(dataset, preprocess, data, reporter)
    model = get_model(config.model).build(meta["num_classes"], meta["in_channels"])
    reporter.log(resuming(run_dir, state, config))
    return _run(model, dataset, splits, preprocess, config, meta, run_path, reporter, started, resume=state,
                tracking=tracking, objective=objective)


def _run(model, dataset, splits, preprocess, config, meta, run_dir, reporter, started, resume, tracking,
         objective=SINGLE_LABEL):
    run = start_run(run_dir, meta, tracking, dataset_name=dataset.name, resume=resume, reporter=reporter)
    n_params = sum(p.numel() for p in model.parameters())
    reporter.log(f"training {meta['architecture']} ({n_params:,} parameters) on {dataset.name}: "
            f"{len(splits['train'])} train, {len(splits.get('val', ()))} val images at "
            f"{preprocess.size}px; {global_batch(config)}; run folder {run_dir}")
    with training_status(run, command="train", model=config.model, dataset=dataset.name, epochs=config.epochs):
        result = fit(model, splits["train"], splits.get("val"), image_inputs(preprocess, dataset, config), config,
                     reporter=reporter, run=run, resume=resume, classes=dataset.classes, objective=objective)
        return (objective.finish or finish)(model, result, dataset, splits, preprocess, config, run, started)


def image_inputs(preprocess: Preprocess, dataset: Dataset, config: TrainConfig) -> ImageInputs:
    """The input side of a run on images: the training options' device, augmentation and seed."""
    return ImageInputs(preprocess, resolve_device(config.device), augment=config.augment, flips=dataset.flips,
                       seed=config.seed, magnitude=config.augment_magnitude)


def global_batch(config: TrainConfig) -> str:
    size = distributed.world_size()
    if size == 1:
        return f"batch {config.batch_size}"
    return f"global batch {size * config.batch_size} ({size} processes x --batch-size {config.batch_size})"


def finish(model: nn.Module, result: FitResult, dataset: Dataset, splits: dict[str, Split], preprocess: Preprocess,
           config: TrainConfig, run: TrainingRun, started: float) -> dict:
    """Test the best weights when there is a test split, commit the final checkpoint; the summary document."""
    summary = summarize(result, config, run.run_dir, imbalance_hint(splits["train"].labels, dataset.classes))
    logits = None
    if "test" in splits:
        device = resolve_device(config.device)
        logits = logits_of(model, splits["test"], preprocess, device)
        report = classification_report(logits, splits["test"].labels, dataset.classes)
        summary["test_top1"], summary["test_loss"] = report["top1"], report["loss"]
    figures = final_figures(run, model, dataset, splits, preprocess, config.device, logits)
    result.state.finished = True  # a resume of this run has nothing left to do
    run.commit(result.state, best_model=model.cpu(),
               metrics={**result.best, **{k: summary[k] for k in ("test_top1",) if k in summary}})
    summary["seconds"] = round(time.perf_counter() - started, 2)
    finish_run(run, summary, figures)
    return summary


def mean_of(history: list[dict], key: str) -> float | None:
    """The mean of ``key`` over the epochs that recorded it (rounded for reading), or None."""
    values = [record[key] for record in history if key in record]
    return round(sum(values) / len(values), 1) if values else None


def precision_of(config: TrainConfig) -> dict:
    """Which precision the epochs trained in and why (--amp auto decides by the CPU or GPU)."""
    from vqtool.compute.cpu import cpu_features
    from vqtool.compute.precision import amp_choice

    device = resolve_device(config.device)
    choice = amp_choice(config.amp, device)
    return {"precision": choice.name, "precision_reason": choice.reason,
            "cpu": cpu_features().describe() if device.type == "cpu" else None}


def summarize(result: FitResult, config: TrainConfig, run_dir: Path, imbalance: str | None = None) -> dict:
    """The summary document; ``imbalance`` (what to try for imbalanced classes) joins the hint unless the run
    already weights or balances its classes."""
    best = result.best
    hint = diagnose(result.history)
    if imbalance and not config.balances_classes:
        hint = f"{hint}; {imbalance}" if hint else imbalance
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
        "val_balanced_top1": best.get("val_balanced_top1") if best["val_loss"] is not None else None,
        "images_per_second": mean_of(result.history, "images_per_second"),
        **precision_of(config),
        "overfitting": bool(hint and hint.startswith("overfitting")),
        "hint": hint,
        "vqtool_version": __version__,
    }
