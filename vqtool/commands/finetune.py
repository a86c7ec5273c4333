"""vqtool finetune: transfer learning from pretrained torchvision, timm or YOLO weights."""

from __future__ import annotations

import click

from vqtool.cli import output_options
from vqtool.commands import data_options, print_summary
from vqtool.commands.train import config_from_options, training_options, typed_epochs
from vqtool.completion import complete_dataset, complete_model

CLASSIFIER_ONLY = ("model_name", "head", "backbone_lr", "unfreeze_at", "unfreeze", "cache", "cache_views", "lr_find")


@click.command()
@click.argument("dataset", default="digits", shell_complete=complete_dataset)
@click.option("--model", "model_name", default="resnet18", show_default=True, shell_complete=complete_model,
              help="Architecture (a torchvision name or timm/<name>; see vqtool models).")
@click.option("--weights", metavar="SPEC",
              help="DEFAULT (the default), a torchvision enum name (IMAGENET1K_V1), a timm tag "
                   "(timm/resnet18.a1_in1k), or a local .pth/.pt/.safetensors file; YOLO: a .pt checkpoint.")
@click.option("--freeze", default="backbone", show_default=True, metavar="backbone|none|N|until:LAYER",
              help="What stays frozen: all but the head, nothing, all but the last N stages, or up to LAYER.")
@click.option("--head", type=click.Choice(["linear", "mlp"]), default="linear", show_default=True,
              help="The new classifier: one linear layer, or two with ReLU and dropout.")
@click.option("--backbone-lr", type=click.FloatRange(0, min_open=True), default=None,
              help="LR of the unfrozen backbone layers (default: --lr / 10).")
@click.option("--unfreeze-at", type=click.IntRange(0), default=0, metavar="EPOCH",
              help="Staged fine-tuning: unfreeze --unfreeze stages at this epoch (0: never).")
@click.option("--unfreeze", type=click.IntRange(1), default=1, show_default=True, metavar="N",
              help="Stages, counted from the end, that --unfreeze-at unfreezes.")
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="With the backbone frozen throughout, compute its features once and train the head on them.")
@click.option("--cache-views", type=click.IntRange(1), default=None, metavar="K",
              help="Augmented views cached per training image (default 1, or 4 with --augment).")
@training_options(epochs=5, batch_size=32, lr=3e-3)  # a few hundred images: enough steps for the head
@data_options
@output_options
def finetune(dataset, model_name, weights, freeze, head, backbone_lr, unfreeze_at, unfreeze, cache, cache_views,
             epochs, batch_size, lr, optimizer, weight_decay, scheduler, augment, label_smoothing, early_stop,
             imgsz, device, out_dir, resume, lr_find, data, out):
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
    from vqtool.detection import is_detection_target

    if is_detection_target(dataset) or is_detection_target(resume):
        _finetune_detector(dataset, weights, freeze, out)
        return
    from vqtool.engine.finetune import FinetuneOptions, finetune_job, lr_find_job, resume_finetune

    if resume:
        summary = resume_finetune(resume, out=out, epochs=typed_epochs(epochs))
    else:
        tune = FinetuneOptions(weights=weights, freeze=freeze, head=head, backbone_lr=backbone_lr,
                               unfreeze_at=unfreeze_at, unfreeze=unfreeze, cache=cache, cache_views=cache_views)
        job = lr_find_job if lr_find else finetune_job
        summary = job(dataset, data, config_from_options(model_name, data), tune, out=out, out_dir=out_dir)
    print_summary(out, summary, title="LR range test" if lr_find else "fine-tuning summary")


def _finetune_detector(dataset, weights, freeze, out):
    from vqtool.detection import CommandOptions
    from vqtool.detection.train import finetune_detector
    from vqtool.errors import VQError

    options = CommandOptions.current()
    for name in CLASSIFIER_ONLY:
        if name in options.typed:
            raise VQError(f"--{name.replace('_', '-').removesuffix('-name')} does not apply to YOLO detectors",
                          usage=True)
    if not weights and not options.get("resume"):
        raise VQError("fine-tuning a detector needs --weights W.pt (a YOLO checkpoint)", usage=True)
    print_summary(out, finetune_detector(dataset, weights, freeze, options, out=out), title="fine-tuning summary")
