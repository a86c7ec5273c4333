"""The training-recipe options of `train` and `finetune`, and the two that supply their defaults: --recipe (a named
bundle) and --config (a file). Precedence: command line > --config file > --recipe > the option's default."""

from __future__ import annotations

import click

from vqtool.commands.types import FiniteFloat

from vqtool.choices import AMP_MODES
from vqtool.classification.config import TrainConfig

DEFAULTS = TrainConfig()  # the recipe options' defaults live in TrainConfig

EXPLICIT = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT,
            click.core.ParameterSource.DEFAULT_MAP, click.core.ParameterSource.PROMPT)


def _load_config(ctx: click.Context, param, path: str | None):
    """--config is eager: its values become the context's default_map before the other options are read."""
    if path is None:
        return None
    from vqtool.classification.training.recipes import option_file
    from vqtool.errors import VQError

    values, from_run = option_file(path)
    names = parameter_names(ctx.command)
    unknown = sorted(key for key in values if key not in names)
    if unknown and not from_run:  # a run's args.json may hold another command's arguments: those are skipped
        raise VQError(f"--config {path}: not options of vqtool {ctx.command.name}: {', '.join(unknown)}",
                      usage=True)
    ctx.default_map = {**(ctx.default_map or {}), **{names[k]: v for k, v in values.items() if k in names}}
    return path


def parameter_names(command: click.Command) -> dict[str, str]:
    """Each name a --config key may use (with `_` for `-`) -> the parameter it sets: the long option names users type
    (``model``, ``out``, ``json``, ``batch_size``) and the parameters' own names (``model_name``, ``out_dir``)."""
    params = [param for param in command.params if param.expose_value]
    names = {param.name: param.name for param in params}
    for param in params:
        for option in param.opts if isinstance(param, click.Option) else ():
            if option.startswith("--"):
                names.setdefault(option[2:].replace("-", "_"), param.name)
    return names


def recipe_options(command):
    """The recipe options, with --recipe and --config."""
    from vqtool.classification.training.recipes import RECIPES

    for decorator in reversed([
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), is_eager=True,
                     expose_value=False, callback=_load_config, metavar="FILE",
                     help="Defaults for any option from a YAML or JSON file (keys are the option names, e.g. model, "
                          "batch-size or batch_size), or a run's "
                          "args.json; options on the command line win."),
        click.option("--recipe", type=click.Choice(list(RECIPES)), default=None,
                     help="Start from a named bundle of the options below (basic: augmentation, label smoothing, "
                          "warm-up, cosine, AdamW; strong: also TrivialAugment, mixup/CutMix, EMA); options given "
                          "explicitly win."),
        click.option("--momentum", type=FiniteFloat(0, 1), default=DEFAULTS.momentum, show_default=True, help="SGD momentum."),
        click.option("--warmup-epochs", type=click.IntRange(0), default=DEFAULTS.warmup_epochs, show_default=True, metavar="N",
                     help="Raise the LR linearly from 1% over the first N epochs, then the --scheduler."),
        click.option("--clip-grad", type=FiniteFloat(0), default=DEFAULTS.clip_grad, show_default=True, metavar="NORM",
                     help="Clip the gradients' global norm to NORM (0: no clipping)."),
        click.option("--accumulate", type=click.IntRange(1), default=DEFAULTS.accumulate, show_default=True, metavar="N",
                     help="Gradient accumulation: one optimizer step per N batches (effective batch N x B)."),
        click.option("--class-weights", default=DEFAULTS.class_weights, metavar="auto|FILE",
                     help="Weight the loss by class: auto (inverse frequency) or a JSON file of weights."),
        click.option("--balanced-sampler", is_flag=True, help="Draw each epoch's images with classes equally likely."),
        click.option("--mixup", type=FiniteFloat(0), default=DEFAULTS.mixup, show_default=True, metavar="ALPHA",
                     help="Mixup of batch images with Beta(ALPHA, ALPHA) weights (0: off; 0.2 is usual)."),
        click.option("--cutmix", type=FiniteFloat(0), default=DEFAULTS.cutmix, show_default=True, metavar="ALPHA",
                     help="CutMix with Beta(ALPHA, ALPHA) box areas (0: off; 1.0 is usual)."),
        click.option("--mix-switch-prob", type=FiniteFloat(0, 1), default=DEFAULTS.mix_switch_prob, show_default=True,
                     help="With both --mixup and --cutmix: the chance a batch uses CutMix."),
        click.option("--ema", type=FiniteFloat(0, 1, max_open=True), default=DEFAULTS.ema, show_default=True,
                     metavar="DECAY", help="Validate and save an exponential moving average of the weights "
                                           "(e.g. 0.9998; 0: off)."),
        click.option("--augment-magnitude", type=click.IntRange(0, 30), default=DEFAULTS.augment_magnitude, metavar="M",
                     help="randaugment: the magnitude bin of 31 (default 9); trivial: the largest bin it samples "
                          "(default 30)."),
        click.option("--amp", type=click.Choice(AMP_MODES), default=DEFAULTS.amp, show_default=True,
                     help="Mixed precision: auto is bf16 on GPUs that have it, else fp16; on CPUs bf16 only "
                          "where the CPU computes it natively (AMX or AVX-512 BF16), else fp32; off: fp32."),
        click.option("--compile", is_flag=True, help="torch.compile the model (the first step pays the compilation)."),
    ]):
        command = decorator(command)
    return command


def recipe_applied(out) -> dict:
    """The current command's options with --recipe's values filled in where none was given explicitly (logged)."""
    ctx = click.get_current_context()
    params = dict(ctx.params)
    if not params.get("recipe"):
        return params
    from vqtool.classification.training.recipes import describe_recipe, recipe_values

    explicit = {name for name in params if ctx.get_parameter_source(name) in EXPLICIT}
    applied = recipe_values(params["recipe"], explicit, params["epochs"])
    out.log(describe_recipe(params["recipe"], applied))
    return {**params, **applied}
