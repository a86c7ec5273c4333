"""vqtool train: a CNN from scratch on a dataset."""

from __future__ import annotations

import click

from vqtool.choices import AUGMENT_POLICIES, OPTIMIZERS, SCHEDULERS
from vqtool.classification.config import TrainConfig
from vqtool.commands import (data_options, device_option, output_options, print_summary, task_options,
                             task_request, tracking_options, trust_pickle_option)
from vqtool.commands.completion import complete_dataset, complete_model
from vqtool.commands.types import FiniteFloat, OutputPath
from vqtool.commands.recipe_options import recipe_applied, recipe_options


TRAIN_DEFAULTS = TrainConfig()


def training_options(command=None, *, defaults: TrainConfig = TRAIN_DEFAULTS):
    """The options `train` and `finetune` share, their defaults those of ``defaults`` (a TrainConfig: the one
    place they live; ``@training_options(defaults=FINETUNE_DEFAULTS)`` for finetune's)."""
    if command is None:
        return lambda decorated: training_options(decorated, defaults=defaults)
    command = recipe_options(command)  # listed after the options below in --help
    for decorator in reversed([
        click.option("--epochs", type=click.IntRange(1), default=defaults.epochs, show_default=True),
        click.option("--batch-size", type=click.IntRange(1), default=defaults.batch_size, show_default=True),
        click.option("--lr", type=FiniteFloat(0, min_open=True), default=defaults.lr, show_default=True,
                     help="Learning rate."),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=defaults.optimizer, show_default=True),
        click.option("--weight-decay", type=FiniteFloat(0), default=defaults.weight_decay, show_default=True),
        click.option("--scheduler", type=click.Choice(SCHEDULERS), default=defaults.scheduler, show_default=True),
        click.option("--augment", type=click.Choice(AUGMENT_POLICIES), default=defaults.augment, show_default=True,
                     help="basic: small shifts/zoom/rotation, colour jitter, flips where they keep labels."),
        click.option("--label-smoothing", type=FiniteFloat(0, 1, max_open=True), default=defaults.label_smoothing,
                     show_default=True),
        click.option("--early-stop", type=click.IntRange(0), default=defaults.early_stop, metavar="N",
                     help="Stop after N epochs without val improvement (0: never)."),
        click.option("--imgsz", type=click.IntRange(1), default=defaults.imgsz,
                     help="Input side in pixels (default: the model's or the data's)."),
        device_option(training=True),
        click.option("--out", "out_dir", type=OutputPath(folder=True, empty=True),
                     help="Run folder (default runs/<command>-<timestamp>); must not exist."),
        click.option("--resume", type=click.Path(exists=True, file_okay=False), metavar="RUN_DIR",
                     help="Continue an interrupted run from its last completed epoch."),
        click.option("--lr-find", is_flag=True,
                     help="Run an LR range test instead of training: plot loss against LR, suggest an LR."),
        click.option("--task", default=None, metavar="NAME",
                     help="classification, detection or multilabel (default: the task of the data, weights or "
                          "options given)."),
        task_options,
    ]):
        command = decorator(command)
    return command


@click.command()
@click.argument("dataset", default="digits", shell_complete=complete_dataset)
@click.option("--model", "model_name", default=TRAIN_DEFAULTS.model, show_default=True, shell_complete=complete_model,
              help="Architecture (see vqtool models).")
@training_options
@data_options
@tracking_options
@trust_pickle_option
@output_options
def train(dataset, data, tracking, out, **options):
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
    summary = run_training("train", dataset, data, tracking, out)
    print_summary(out, summary, title="LR range test" if options["lr_find"] else "training summary")


def run_training(command: str, dataset: str, data, tracking, out) -> dict:
    """Train or fine-tune through the task of the dataset, run folder or options (a --recipe's values applied)."""
    from vqtool.tasks import run

    _, summary = run(task_request(command, out, dataset=dataset, data=data, tracking=tracking,
                                  params=recipe_applied(out)))
    return summary
