"""The `finetune` job: pretrained weights, a new head, freezing, staged unfreezing and the feature cache.

Built on the training loop of :mod:`vqtool.classification.loop`. The head trains at
``--lr``; the rest of the network, where unfrozen, at ``--backbone-lr``
(default lr/10) through a second optimizer parameter group. When the whole
backbone stays frozen, its features are computed once and only the head is
fitted on them (:mod:`vqtool.classification.features`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from vqtool.data import DataOptions, Dataset, load_dataset
from vqtool.data.pipeline import Preprocess
from vqtool.compute.device import resolve_device
from vqtool.classification.features import FeatureInputs, cache_batch, cache_features, frozen_backbone
from vqtool.classification.lr_find import find_lr
from vqtool.compute import distributed
from vqtool.classification.config import TrainConfig
from vqtool.classification.ema import checkpoint_meta
from vqtool.classification.loop import fit
from vqtool.classification.train import (finish, global_batch, image_inputs, prepare_splits, refuse_distributed_lr_find,
                                         resumable, resuming, start_run_dir)
from vqtool.classification.training_run import ResumeState, TrainingRun
from vqtool.errors import VQError
from vqtool.models.freezing import FreezeSpec, apply_freeze, parameter_counts, unfreeze_last
from vqtool.models.surgery import HEADS
from vqtool.models.weights import Pretrained, pretrained_classifier
from vqtool.reporter import Reporter

AUGMENTED_VIEWS = 4  # cached views per image when training augments and --cache-views is not given


@dataclass
class FinetuneOptions:
    """What `finetune` adds to the training options; stored in args.json for --resume."""

    weights: str | None = None  # None: the architecture's default pretrained weights
    freeze: str = "backbone"
    head: str = "linear"
    backbone_lr: float | None = None  # None: lr / 10
    unfreeze_at: int = 0  # epoch at which --unfreeze stages start training (0: never)
    unfreeze: int = 1
    cache: bool = True
    cache_views: int | None = None
    allow_partial_weights: bool = False  # a weights file that fills less than half of the backbone

    def check(self, config: TrainConfig) -> FreezeSpec:
        spec = FreezeSpec.parse(self.freeze)
        if self.head not in HEADS:
            raise VQError(f"--head {self.head}: choose from {', '.join(HEADS)}", usage=True)
        if self.unfreeze_at and not 1 < self.unfreeze_at <= config.epochs:
            raise VQError(f"--unfreeze-at {self.unfreeze_at}: must be an epoch after the first, "
                          f"up to --epochs {config.epochs}", usage=True)
        if self.unfreeze_at and spec.mode == "none":
            raise VQError("--unfreeze-at needs something frozen first (--freeze backbone or N)", usage=True)
        return spec

    def backbone_learning_rate(self, config: TrainConfig) -> float:
        return self.backbone_lr if self.backbone_lr is not None else config.lr / 10

    def uses_cache(self, spec: FreezeSpec) -> bool:
        """The cache serves runs whose backbone stays frozen throughout."""
        return self.cache and spec.mode == "backbone" and not self.unfreeze_at

    def views(self, config: TrainConfig) -> int:
        if self.cache_views is not None:
            return self.cache_views
        return 1 if config.augment == "none" else AUGMENTED_VIEWS

    @classmethod
    def from_dict(cls, data: dict) -> "FinetuneOptions":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Setup:
    """Everything a fine-tuning run (or its LR range test) starts from."""

    dataset: Dataset
    pretrained: Pretrained
    preprocess: Preprocess
    head: str
    freeze: FreezeSpec
    splits: dict

    @property
    def model(self) -> torch.nn.Module:
        return self.pretrained.model


def set_up(dataset_spec: str, data: DataOptions, config: TrainConfig, tune: FinetuneOptions,
            reporter: Reporter) -> Setup:
    """Load the data and the pretrained model, put the new head on, freeze."""
    config.check()
    freeze = tune.check(config)
    distributed.join(resolve_device(config.device))
    dataset = load_dataset(dataset_spec, data)
    torch.manual_seed(config.seed)  # the new head's initial weights are part of what --seed reproduces
    pretrained = pretrained_classifier(config.model, tune.weights, len(dataset.classes), tune.head,
                                       allow_partial=tune.allow_partial_weights)
    for note in pretrained.notes:
        reporter.warn(f"weights {pretrained.source}: {note}")
    preprocess = pretrained.preprocess.at_size(config.imgsz)
    head = pretrained.head
    apply_freeze(pretrained.model, head, freeze)
    splits = prepare_splits(dataset, preprocess, data, reporter)
    return Setup(dataset, pretrained, preprocess, head, freeze, splits)


def finetune_job(dataset_spec: str, data: DataOptions, config: TrainConfig, tune: FinetuneOptions, *,
                 reporter: Reporter, out_dir: str | None = None) -> dict:
    """Fine-tune, test and save; returns the summary document (the keys of `train`'s, and more)."""
    started = time.perf_counter()
    setup = set_up(dataset_spec, data, config, tune, reporter)
    run_dir = distributed.main_run_dir(lambda: start_run_dir("finetune", out_dir, {
        "dataset": dataset_spec, "data": asdict(data), "config": asdict(config), "finetune": asdict(tune)}))
    return _train(setup, config, tune, run_dir, reporter, started, resume=None)


def resume_finetune(run_dir: str, *, reporter: Reporter, epochs: int | None = None) -> dict:
    """Continue an interrupted fine-tuning run from its last completed epoch."""
    started = time.perf_counter()
    recorded, config, state = resumable(run_dir, "finetune", epochs)
    tune = FinetuneOptions.from_dict(recorded["finetune"])
    setup = set_up(recorded["dataset"], DataOptions(**recorded["data"]), config, tune, reporter)
    reporter.log(resuming(run_dir, state, config))
    return _train(setup, config, tune, Path(run_dir), reporter, started, resume=state)


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
        groups = [{"params": [p for p in model.parameters() if id(p) in head_ids], "lr": config.lr},
                  {"params": [p for p in model.parameters() if id(p) not in head_ids],
                   "lr": tune.backbone_learning_rate(config)}]
        return model, splits["train"], splits.get("val"), images, groups
    model.to(device, memory_format=torch.channels_last)
    views = tune.views(config)
    augment = config.augment != "none"
    reporter.log(f"caching backbone features: {views} view{'s' if views > 1 else ''} per train image"
            f"{' (augmented)' if augment else ''}")
    sample = images.eval(splits["train"].pixels[:cache_batch(device)])
    with frozen_backbone(model, setup.head, sample, reporter) as backbone:
        train = cache_features(backbone, splits["train"], images, views, augment=augment, reporter=reporter,
                               description="caching train features")
        val = None
        if "val" in splits:
            val = cache_features(backbone, splits["val"], images, 1, augment=False, reporter=reporter,
                                 description="caching val features")
    return model.get_submodule(setup.head), train, val, FeatureInputs(device, config.seed), None


def _train(setup: Setup, config: TrainConfig, tune: FinetuneOptions, run_dir: Path, reporter: Reporter, started: float,
           resume: ResumeState | None) -> dict:
    meta = {"task": "classification", "architecture": config.model, "num_classes": len(setup.dataset.classes),
            "in_channels": setup.preprocess.channels, "classes": setup.dataset.classes,
            "preprocess": setup.preprocess.to_dict(), "dataset": setup.dataset.spec, "train_args": asdict(config),
            "weights": setup.pretrained.source, "finetune": asdict(tune),
            "model_options": {"head": tune.head} if tune.head != "linear" else {}, **checkpoint_meta(config.ema)}
    run = TrainingRun(run_dir, meta, network=setup.model)
    module, train, val, inputs, groups = _trainable(setup, config, tune, reporter)

    def unfreeze_on_schedule(epoch, model, optimizer):
        if epoch == tune.unfreeze_at:
            names = unfreeze_last(setup.model, setup.head, tune.unfreeze, norms=False)
            trainable, frozen = parameter_counts(setup.model)
            reporter.log(f"epoch {epoch}: unfreezing {', '.join(names)} at lr {tune.backbone_learning_rate(config):.1e}: "
                    f"{trainable:,} trainable, {frozen:,} frozen parameters")

    result = fit(module, train, val, inputs, config, reporter=reporter, run=run, resume=resume, param_groups=groups,
                 on_epoch_start=unfreeze_on_schedule if tune.unfreeze_at else None,
                 classes=setup.dataset.classes)
    summary = finish(setup.model, result, setup.dataset, setup.splits, setup.preprocess, config, run, started)
    return {**summary, "weights": setup.pretrained.source, "freeze": str(setup.freeze),
            "feature_cache": tune.uses_cache(setup.freeze)}
