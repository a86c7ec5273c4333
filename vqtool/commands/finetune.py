"""vqtool finetune: transfer learning from pretrained torchvision, timm or YOLO weights."""

from __future__ import annotations

import click

from vqtool.commands import config_options, data_options, output_options, print_summary, tracking_options, trust_pickle_option
from vqtool.commands.train import model_option, run_training, training_options
from vqtool.commands.completion import complete_dataset
from vqtool.classification.config import FinetuneOptions


@click.command()
@click.argument("dataset", default="digits", shell_complete=complete_dataset)
@model_option("finetune")
@config_options(FinetuneOptions)
@training_options("finetune")
@data_options
@tracking_options
@trust_pickle_option
@output_options
def finetune(dataset, data, tracking, out, **options):
    """Fine-tune pretrained weights on DATASET with a new head.

    By default only the new head trains, on backbone features computed once;
    --freeze N, --unfreeze-at and --backbone-lr train more of the network.
    A YOLO data.yaml fine-tunes a detector (--weights W.pt, --freeze backbone|N).

    \b
    Examples:
      vqtool finetune ./pets --freeze backbone
      vqtool finetune ./pets --model timm/tf_efficientnet_lite0 --weights lite0.safetensors
      vqtool finetune ./pets --model resnet50 --weights IMAGENET1K_V2 --unfreeze-at 3 --unfreeze 2
      vqtool finetune ./pets --lr-find
      vqtool finetune data.yaml --weights yolov8n.pt --freeze backbone --epochs 20
    """
    summary = run_training("finetune", dataset, data, tracking, out)
    print_summary(out, summary, title="LR range test" if options["lr_find"] else "fine-tuning summary")
