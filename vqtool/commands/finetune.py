"""vqtool finetune: transfer learning from pretrained torchvision, timm or YOLO weights."""

from __future__ import annotations

import click

from vqtool.commands import (CLASSIFIER_ONLY, data_options, detector_training, output_options, print_summary,
                             tracking_options, trust_pickle_option)
from vqtool.commands.train import check_before_torch, config_from_options, training_options, typed_epochs
from vqtool.commands.completion import complete_dataset, complete_model
from vqtool.commands.types import FiniteFloat


@click.command()
@click.argument("dataset", default="digits", shell_complete=complete_dataset)
@click.option("--model", "model_name", default="resnet18", show_default=True, shell_complete=complete_model,
              help="Architecture (a torchvision name or timm/<name>; see vqtool models).")
@click.option("--weights", metavar="SPEC",
              help="DEFAULT (the default), a torchvision enum name (IMAGENET1K_V1), a timm tag "
                   "(timm/resnet18.a1_in1k), or a local .pth/.pt/.safetensors file; YOLO: a .pt checkpoint.")
@click.option("--allow-partial-weights", is_flag=True,
              help="Use a --weights file even when it fills less than half of the backbone (else an error).")
@click.option("--freeze", default="backbone", show_default=True, metavar="backbone|none|N|until:LAYER",
              help="What stays frozen: all but the head, nothing, all but the last N stages, or up to LAYER.")
@click.option("--head", type=click.Choice(["linear", "mlp"]), default="linear", show_default=True,
              help="The new classifier: one linear layer, or two with ReLU and dropout.")
@click.option("--backbone-lr", type=FiniteFloat(0, min_open=True), default=None,
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
@tracking_options
@trust_pickle_option
@output_options
def finetune(dataset, model_name, weights, allow_partial_weights, freeze, head, backbone_lr, unfreeze_at, unfreeze,
             cache, cache_views, epochs, batch_size, lr, optimizer, weight_decay, scheduler, augment, label_smoothing,
             early_stop, imgsz, device, out_dir, resume, lr_find, data, tracking, out, **recipe):
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
    from vqtool.tasks import DETECTION, task_of

    if task_of(dataset, resume) == DETECTION:
        print_summary(out, _finetune_detector(dataset, weights, freeze, resume, out_dir, tracking, out),
                      title="fine-tuning summary")
        return
    from vqtool.classification.config import FinetuneOptions

    config = config_from_options(model_name, data, out)
    tune = FinetuneOptions(weights=weights, freeze=freeze, head=head, backbone_lr=backbone_lr, unfreeze_at=unfreeze_at,
                           unfreeze=unfreeze, cache=cache, cache_views=cache_views,
                           allow_partial_weights=allow_partial_weights)
    check_before_torch("finetune", dataset, resume, config, tune)
    from vqtool.classification.finetune import finetune_job, lr_find_job, resume_finetune

    if resume:
        summary = resume_finetune(resume, reporter=out, epochs=typed_epochs(epochs), tracking=tracking)
    else:
        if lr_find:
            summary = lr_find_job(dataset, data, config, tune, reporter=out, out_dir=out_dir)
        else:
            summary = finetune_job(dataset, data, config, tune, reporter=out, out_dir=out_dir, tracking=tracking)
    print_summary(out, summary, title="LR range test" if lr_find else "fine-tuning summary")


def _finetune_detector(dataset, weights, freeze, resume, out_dir, tracking, out) -> dict:
    from vqtool.detection.train import finetune_detector, resume_detector
    from vqtool.errors import VQError

    if resume:
        return resume_detector(resume, reporter=out, tracking=tracking)
    training = detector_training(refused=("model_name", *CLASSIFIER_ONLY))
    if not weights:
        raise VQError("fine-tuning a detector needs --weights W.pt (a YOLO checkpoint)", usage=True)
    return finetune_detector(dataset, weights, freeze, training, out_dir=out_dir, reporter=out, tracking=tracking)
