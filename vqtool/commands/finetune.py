"""vqtool finetune: transfer learning from pretrained torchvision, timm or YOLO weights."""

from __future__ import annotations

import click

from vqtool.commands import data_options, output_options, print_summary, tracking_options, trust_pickle_option
from vqtool.commands.train import run_training, training_options
from vqtool.commands.completion import complete_dataset, complete_model
from vqtool.commands.types import FiniteFloat
from vqtool.classification.config import FINETUNE_DEFAULTS, FinetuneOptions
from vqtool.models.options import HEADS

TUNE = FinetuneOptions()  # the defaults of finetune's own options


@click.command()
@click.argument("dataset", default="digits", shell_complete=complete_dataset)
@click.option("--model", "model_name", default=FINETUNE_DEFAULTS.model, show_default=True, shell_complete=complete_model,
              help="Architecture (a torchvision name or timm/<name>; see vqtool models).")
@click.option("--weights", metavar="SPEC", default=TUNE.weights,
              help="DEFAULT (the default), a torchvision enum name (IMAGENET1K_V1), a timm tag "
                   "(timm/resnet18.a1_in1k), or a local .pth/.pt/.safetensors file; YOLO: a .pt checkpoint.")
@click.option("--allow-partial-weights", is_flag=True, default=TUNE.allow_partial_weights,
              help="Use a --weights file even when it fills less than half of the backbone (else an error).")
@click.option("--freeze", default=TUNE.freeze, show_default=True, metavar="backbone|none|N|until:LAYER",
              help="What stays frozen: all but the head, nothing, all but the last N stages, or up to LAYER.")
@click.option("--head", type=click.Choice(HEADS), default=TUNE.head, show_default=True,
              help="The new classifier: one linear layer, or two with ReLU and dropout.")
@click.option("--backbone-lr", type=FiniteFloat(0, min_open=True), default=TUNE.backbone_lr,
              help="LR of the unfrozen backbone layers (default: --lr / 10).")
@click.option("--unfreeze-at", type=click.IntRange(0), default=TUNE.unfreeze_at, metavar="EPOCH",
              help="Staged fine-tuning: unfreeze --unfreeze stages at this epoch (0: never).")
@click.option("--unfreeze", type=click.IntRange(1), default=TUNE.unfreeze, show_default=True, metavar="N",
              help="Stages, counted from the end, that --unfreeze-at unfreezes.")
@click.option("--cache/--no-cache", default=TUNE.cache, show_default=True,
              help="With the backbone frozen throughout, compute its features once and train the head on them.")
@click.option("--cache-views", type=click.IntRange(1), default=TUNE.cache_views, metavar="K",
              help="Augmented views cached per training image (default 1, or 4 with --augment).")
@training_options(defaults=FINETUNE_DEFAULTS)
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
