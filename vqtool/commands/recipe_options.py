"""The training-recipe options of `train` and `finetune`, and the two that supply their defaults: --recipe (a named
bundle) and --config (a file). Precedence: command line > --config file > --recipe > the option's default."""

from __future__ import annotations

import click

def _load_config(ctx: click.Context, param, path: str | None):
    """--config is eager: its values become the context's default_map before the other options are read."""
    if path is None:
        return None
    from vqtool.classification.recipes import option_file
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


def recipe_options(command, defaults):
    """--config, and the recipe options of TrainConfig (``defaults``: the command's) with --recipe."""
    from vqtool.commands import config_options

    command = config_options(defaults, "recipe", "momentum", "warmup_epochs", "clip_grad", "accumulate",
                             "class_weights", "balanced_sampler", "mixup", "cutmix", "mix_switch_prob", "ema",
                             "augment_magnitude", "amp", "compile")(command)
    return click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), is_eager=True,
                        expose_value=False, callback=_load_config, metavar="FILE",
                        help="Defaults for any option from a YAML or JSON file (keys are the option names, e.g. "
                             "model, batch-size or batch_size), or a run's args.json; options on the command line "
                             "win.")(command)


def recipe_applied(out, given) -> dict:
    """The command's options (``given``: a :class:`~vqtool.commands.GivenOptions`) with --recipe's values filled in
    where none was given explicitly (logged)."""
    params = dict(given.params)
    if not params.get("recipe"):
        return params
    from vqtool.classification.recipes import describe_recipe, recipe_values

    applied = recipe_values(params["recipe"], set(given.explicit), params["epochs"])
    out.log(describe_recipe(params["recipe"], applied))
    return {**params, **applied}
