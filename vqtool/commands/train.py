"""vqtool train: a CNN from scratch on a dataset."""

from __future__ import annotations

import click

from vqtool.classification.config import FINETUNE_DEFAULTS, TrainConfig
from vqtool.commands import (config_options, data_options, given_options, output_options, print_summary, task_options,
                             task_request, tracking_options, trust_pickle_option)
from vqtool.commands.completion import complete_dataset
from vqtool.commands.types import OutputPath
from vqtool.commands.recipe_options import recipe_applied, recipe_options

# Each command's TrainConfig defaults: the fields' own, or finetune's (a pretrained model, fewer steps).
TRAINING_DEFAULTS = {"train": TrainConfig(), "finetune": FINETUNE_DEFAULTS}


def model_option(command: str):
    """--model, with the command's default and help."""
    return config_options(TRAINING_DEFAULTS[command], "model", command=command)


def training_options(command: str):
    """The options `train` and `finetune` share (``command``'s TrainConfig defaults)."""
    defaults = TRAINING_DEFAULTS[command]

    def decorate(decorated):
        decorated = recipe_options(decorated, defaults)  # listed after the options below in --help
        for decorator in reversed([
            config_options(defaults, "epochs", "batch_size", "lr", "optimizer", "weight_decay", "scheduler", "augment",
                           "label_smoothing", "early_stop", "imgsz", "device"),
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
            decorated = decorator(decorated)
        return decorated

    return decorate


@click.command()
@click.argument("dataset", default="digits", shell_complete=complete_dataset)
@model_option("train")
@training_options("train")
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

    given = given_options()
    _, summary = run(task_request(command, out, dataset=dataset, data=data, tracking=tracking, given=given,
                                  params=recipe_applied(out, given)))
    return summary
