"""vqtool train: a CNN from scratch on a dataset."""

from __future__ import annotations

import click

from vqtool.choices import AUGMENT_POLICIES, OPTIMIZERS, SCHEDULERS
from vqtool.commands import (data_options, detector_training, device_option, output_options, print_summary,
                             tracking_options, trust_pickle_option, typed_options)
from vqtool.commands.completion import complete_dataset, complete_model
from vqtool.commands.types import FiniteFloat, OutputPath
from vqtool.commands.recipe_options import recipe_applied, recipe_options


def training_options(command=None, *, epochs: int = 10, batch_size: int = 64, lr: float = 2e-3):
    """The options `train` and `finetune` share (``@training_options(epochs=5)`` for other defaults)."""
    if command is None:
        return lambda decorated: training_options(decorated, epochs=epochs, batch_size=batch_size, lr=lr)
    command = recipe_options(command)  # listed after the options below in --help
    for decorator in reversed([
        click.option("--epochs", type=click.IntRange(1), default=epochs, show_default=True),
        click.option("--batch-size", type=click.IntRange(1), default=batch_size, show_default=True),
        click.option("--lr", type=FiniteFloat(0, min_open=True), default=lr, show_default=True,
                     help="Learning rate."),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True),
        click.option("--weight-decay", type=FiniteFloat(0), default=0.0, show_default=True),
        click.option("--scheduler", type=click.Choice(SCHEDULERS), default="onecycle", show_default=True),
        click.option("--augment", type=click.Choice(AUGMENT_POLICIES), default="none", show_default=True,
                     help="basic: small shifts/zoom/rotation, colour jitter, flips where they keep labels."),
        click.option("--label-smoothing", type=FiniteFloat(0, 1, max_open=True), default=0.0,
                     show_default=True),
        click.option("--early-stop", type=click.IntRange(0), default=0, metavar="N",
                     help="Stop after N epochs without val improvement (0: never)."),
        click.option("--imgsz", type=click.IntRange(1), default=None,
                     help="Input side in pixels (default: the model's or the data's)."),
        device_option(training=True),
        click.option("--out", "out_dir", type=OutputPath(folder=True, empty=True),
                     help="Run folder (default runs/<command>-<timestamp>); must not exist."),
        click.option("--resume", type=click.Path(exists=True, file_okay=False), metavar="RUN_DIR",
                     help="Continue an interrupted run from its last completed epoch."),
        click.option("--lr-find", is_flag=True,
                     help="Run an LR range test instead of training: plot loss against LR, suggest an LR."),
    ]):
        command = decorator(command)
    return command


@click.command()
@click.argument("dataset", default="digits", shell_complete=complete_dataset)
@click.option("--model", "model_name", default="smallcnn", show_default=True, shell_complete=complete_model,
              help="Architecture (see vqtool models).")
@training_options
@data_options
@tracking_options
@trust_pickle_option
@output_options
def train(dataset, model_name, epochs, batch_size, lr, optimizer, weight_decay, scheduler, augment,
          label_smoothing, early_stop, imgsz, device, out_dir, resume, lr_find, data, tracking, out, **recipe):
    """Train a CNN from scratch on DATASET (default: the embedded digits).

    DATASET is a registered name (vqtool datasets) or a folder of class folders;
    a YOLO data.yaml trains a detector (--model yolov8n.yaml by default).

    \b
    Examples:
      vqtool train
      vqtool train fashion-mnist --data-dir ~/data --model smallcnn --epochs 3
      vqtool train ./cifar10 --model simplecnn --augment basic --out runs/cifar
      vqtool train fashion-mnist --model cnn-bn --recipe strong --epochs 30
      vqtool train --config runs/cifar/args.json --seed 1
      vqtool train --resume runs/cifar
      vqtool train ./cifar10 --log tensorboard --log mlflow --experiment cifar
      vqtool train ./cifar10 --model resnet18 --lr-find
      vqtool train data.yaml --model yolov8n.yaml --epochs 50 --imgsz 640
    """
    from vqtool.tasks import DETECTION, task_of

    if task_of(dataset, resume) == DETECTION:  # a YOLO data.yaml or detector run
        print_summary(out, _train_detector(dataset, resume, out_dir, tracking, out), title="training summary")
        return
    config = config_from_options(model_name, data, out)
    check_before_torch("train", dataset, resume, config)
    from vqtool.classification.train import resume_job, train_job

    if resume:
        summary = resume_job(resume, reporter=out, epochs=typed_epochs(epochs), tracking=tracking)
    else:
        summary = train_job(dataset, data, config, reporter=out, out_dir=out_dir, lr_find=lr_find,
                            tracking=tracking)
    print_summary(out, summary, title="LR range test" if lr_find else "training summary")


def config_from_options(model_name: str, data, out):
    """The TrainConfig of the training options the current command was given (a --recipe's values filled in)."""
    from vqtool.classification.config import TrainConfig

    return TrainConfig.from_dict({**recipe_applied(out), "model": model_name, "seed": data.seed})


def check_before_torch(command: str, dataset: str, resume: str | None, config, tune=None) -> None:
    """The usage errors that need no data, raised before the job imports torch: a moment, not seconds."""
    from vqtool.registry import get_dataset_source
    from vqtool.runs.folder import run_arguments

    if resume:
        run_arguments(resume, command)
        return
    config.check()
    if tune is not None:
        tune.check(config)
    get_dataset_source(dataset)


def typed_epochs(epochs: int) -> int | None:
    """--epochs when the user typed it (a resumed run otherwise keeps its own)."""
    return epochs if "epochs" in typed_options() else None


def _train_detector(dataset: str, resume: str | None, out_dir: str | None, tracking, out) -> dict:
    from vqtool.detection.train import resume_detector, train_detector

    if resume:
        return resume_detector(resume, reporter=out, tracking=tracking)
    return train_detector(dataset, detector_training(), model_name=typed_options().get("model_name"),
                          out_dir=out_dir, reporter=out, tracking=tracking)
