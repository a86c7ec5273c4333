"""The `finetune` job: pretrained weights, a new head, freezing, staged unfreezing and the feature cache.

Built on the training loop of :mod:`vqtool.classification.training.loop`. The head trains at
``--lr``; the rest of the network, where unfrozen, at ``--backbone-lr``
(default lr/10) through a second optimizer parameter group. When the whole
backbone stays frozen, its features are computed once and only the head is
fitted on them (:mod:`vqtool.classification.training.features`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vqtool.data import DataOptions, Dataset
from vqtool.data.pipeline import Preprocess
from vqtool.compute.device import one_cpu_thread, resolve_device
from vqtool.classification.training.features import FeatureInputs, Wanted, features_of
from vqtool.classification.training.lr_find import find_lr
from vqtool.compute import distributed
from vqtool.classification.checkpoints.format import read_meta
from vqtool.classification.config import FinetuneOptions, TrainConfig
from vqtool.classification.training.ema import checkpoint_meta
from vqtool.classification.training.loop import fit
from vqtool.classification.training.objective import SINGLE_LABEL
from vqtool.classification.training.train import (finish, global_batch, image_inputs, mean_of, prepare_splits,
                                         refuse_distributed_lr_find,
                                         resumable, resuming, start_run_dir)
from vqtool.classification.training.run_lifecycle import start_run
from vqtool.classification.training.run import ResumeState, training_status
from vqtool.models.freezing import FreezeSpec, apply_freeze, parameter_counts, unfreeze_last
from vqtool.models.weights import Pretrained, pretrained_classifier
from vqtool.reporter import Reporter
from vqtool.runs.trackers import TrackingOptions, check_resumed



@dataclass
class Setup:
    """Everything a fine-tuning run (or its LR range test) starts from."""

    dataset: Dataset
    pretrained: Pretrained
    preprocess: Preprocess
    head: str
    freeze: FreezeSpec
    splits: dict
    store: bool = True  # backbone features kept in the store on disk (and read back from it)

    @property
    def model(self) -> torch.nn.Module:
        return self.pretrained.model


def set_up(dataset_spec: str, data: DataOptions, config: TrainConfig, tune: FinetuneOptions,
            reporter: Reporter, objective=SINGLE_LABEL) -> Setup:
    """Load the data (``objective.load``) and the pretrained model, put the new head on, freeze. The options were
    checked before torch loaded (the task's entry point, vqtool tune's trial)."""
    freeze = FreezeSpec.parse(tune.freeze)
    distributed.join(resolve_device(config.device))
    dataset = objective.load(dataset_spec, data)
    torch.manual_seed(config.seed)  # the new head's initial weights are part of what --seed reproduces
    pretrained = pretrained_classifier(config.model, tune.weights, len(dataset.classes), tune.head,
                                       allow_partial=tune.allow_partial_weights)
    for note in pretrained.notes:
        reporter.warn(f"weights {pretrained.source}: {note}")
    preprocess = pretrained.preprocess.at_size(config.imgsz)
    head = pretrained.head
    apply_freeze(pretrained.model, head, freeze)
    splits = prepare_splits(dataset, preprocess, data, reporter)
    return Setup(dataset, pretrained, preprocess, head, freeze, splits, store=data.cache_store)


def finetune_job(dataset_spec: str, data: DataOptions, config: TrainConfig, tune: FinetuneOptions, *,
                 reporter: Reporter, out_dir: str | None = None, tracking: TrackingOptions | None = None,
                 objective=SINGLE_LABEL) -> dict:
    """Fine-tune, test and save; returns the summary document (the keys of `train`'s, and more)."""
    started = time.perf_counter()
    if tracking:
        tracking.check()
    setup = set_up(dataset_spec, data, config, tune, reporter, objective)
    run_dir = distributed.main_run_dir(lambda: start_run_dir("finetune", out_dir, {
        "dataset": dataset_spec, "data": asdict(data), "config": asdict(config), "finetune": asdict(tune)},
        objective))
    return _train(setup, config, tune, run_dir, reporter, started, resume=None, tracking=tracking,
                  objective=objective)


def resume_finetune(run_dir: str, *, reporter: Reporter, epochs: int | None = None,
                    tracking: TrackingOptions | None = None, objective=SINGLE_LABEL) -> dict:
    """Continue an interrupted fine-tuning run from its last completed epoch (and the trackers it was logged to)."""
    started = time.perf_counter()
    recorded, config, state = resumable(run_dir, "finetune", epochs)
    check_resumed(tracking, Path(run_dir))
    tune = FinetuneOptions.from_dict(recorded["finetune"])
    setup = set_up(recorded["dataset"], DataOptions(**recorded["data"]), config, tune, reporter, objective)
    reporter.log(resuming(run_dir, state, config))
    return _train(setup, config, tune, Path(run_dir), reporter, started, resume=state, tracking=tracking,
                  objective=objective)


def lr_find_job(dataset_spec: str, data: DataOptions, config: TrainConfig, tune: FinetuneOptions, *,
                reporter: Reporter, out_dir: str | None = None) -> dict:
    """The LR range test on what this fine-tuning run would train; writes lr_find.png and .csv."""
    refuse_distributed_lr_find()
    setup = set_up(dataset_spec, data, config, tune, reporter)
    model, train, _, inputs, groups = _trainable(setup, config, tune, reporter)
    return find_lr(model, train, inputs, config, reporter=reporter, out_dir=out_dir, param_groups=groups)


def _trainable(setup: Setup, config: TrainConfig, tune: FinetuneOptions, reporter: Reporter):
    """(module to fit, train split, val split, inputs, parameter groups): the head on cached features, or the
    whole network on images."""
    model, splits = setup.model, setup.splits
    images = image_inputs(setup.preprocess, setup.dataset, config)
    device = images.device
    trainable, frozen = parameter_counts(model)
    reporter.log(f"fine-tuning {config.model} from {setup.pretrained.source} on {setup.dataset.name}: "
            f"{len(splits['train'])} train, {len(splits.get('val', ()))} val images at {setup.preprocess.size}px; "
            f"--freeze {setup.freeze}: {trainable:,} trainable, {frozen:,} frozen parameters; {global_batch(config)}")
    if not tune.uses_cache(setup.freeze):
        head_ids = {id(p) for p in model.get_submodule(setup.head).parameters()}
        groups = [{"params": [p for p in model.parameters() if id(p) in head_ids], "lr": config.lr, "name": "head"},
                  {"params": [p for p in model.parameters() if id(p) not in head_ids],
                   "lr": tune.backbone_learning_rate(config), "name": "backbone"}]
        return model, splits["train"], splits.get("val"), images, groups
    model.to(device, memory_format=torch.channels_last)
    views = tune.views(config)
    augment = config.augment != "none"
    reporter.log(f"frozen-backbone features: {views} view{'s' if views > 1 else ''} per train image"
            f"{' (augmented)' if augment else ''}")
    wanted = {"train": Wanted(splits["train"], views, augment)}
    if "val" in splits:
        wanted["val"] = Wanted(splits["val"], 1, False)
    recipe = {"preprocess": setup.preprocess.to_dict(), "augment": config.augment, "seed": config.seed,
              "flips": setup.dataset.flips, "data": setup.dataset.name}
    started = time.perf_counter()
    features = features_of(model, setup.head, wanted, images, recipe, reporter, store=setup.store)
    backbone_seconds = time.perf_counter() - started
    reporter.log(f"frozen-backbone features ready in {backbone_seconds:.1f} s; the epochs train the head alone")
    train, val = features["train"], features.get("val")
    return model.get_submodule(setup.head), train, val, FeatureInputs(device, config.seed, backbone_seconds), None


def _train(setup: Setup, config: TrainConfig, tune: FinetuneOptions, run_dir: Path, reporter: Reporter, started: float,
           resume: ResumeState | None, tracking: TrackingOptions | None, objective=SINGLE_LABEL) -> dict:
    meta = {"task": objective.task, "architecture": config.model, "num_classes": len(setup.dataset.classes),
            "in_channels": setup.preprocess.channels, "classes": setup.dataset.classes,
            "preprocess": setup.preprocess.to_dict(), "dataset": setup.dataset.record(), "train_args": asdict(config),
            "weights": setup.pretrained.source, "finetune": asdict(tune),
            "model_options": {"head": tune.head} if tune.head != "linear" else {}, **checkpoint_meta(config.ema)}
    run = start_run(run_dir, meta, tracking, dataset_name=setup.dataset.name, resume=resume, reporter=reporter,
                    network=setup.model)
    module, train, val, inputs, groups = _trainable(setup, config, tune, reporter)
    if getattr(inputs, "head_only", False):  # the run's training time includes the backbone pass (vqtool runs)
        earlier = read_meta(run_dir).get("backbone_seconds", 0.0) if resume else 0.0
        run.meta["backbone_seconds"] = round(earlier + inputs.backbone_seconds, 2)

    def unfreeze_on_schedule(epoch, model, optimizer):
        if epoch == tune.unfreeze_at:
            names = unfreeze_last(setup.model, setup.head, tune.unfreeze, norms=False)
            trainable, frozen = parameter_counts(setup.model)
            reporter.log(f"epoch {epoch}: unfreezing {', '.join(names)} at lr {tune.backbone_learning_rate(config):.1e}: "
                    f"{trainable:,} trainable, {frozen:,} frozen parameters")

    head_only = getattr(inputs, "head_only", False)
    with training_status(run, command="finetune", model=config.model, dataset=setup.dataset.name, epochs=config.epochs):
        with one_cpu_thread(head_only and inputs.device.type == "cpu"):
            result = fit(module, train, val, inputs, config, reporter=reporter, run=run, resume=resume,
                         param_groups=groups, on_epoch_start=unfreeze_on_schedule if tune.unfreeze_at else None,
                         classes=setup.dataset.classes, objective=objective)
        summary = (objective.finish or finish)(setup.model, result, setup.dataset, setup.splits, setup.preprocess, config, run,
                                   started)
    if head_only:
        summary.update(cached_throughput(result.history, inputs.backbone_seconds, len(setup.splits["train"])))
    return {**summary, "weights": setup.pretrained.source, "freeze": str(setup.freeze),
            "feature_cache": tune.uses_cache(setup.freeze)}


def cached_throughput(history: list[dict], backbone_seconds: float, train_images: int) -> dict:
    """A feature-cache run's speed: training images per second of the whole job (the backbone pass included),
    and of the head's epochs alone."""
    head_seconds = sum(record["head_seconds"] for record in history)
    return {"images_per_second": round(len(history) * train_images / (backbone_seconds + head_seconds), 1),
            "head_images_per_second": mean_of(history, "head_images_per_second"),
            "backbone_seconds": round(backbone_seconds, 2), "head_seconds": round(head_seconds, 2)}
