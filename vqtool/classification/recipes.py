"""Named training recipes (``--recipe``) and option files (``--config``): defaults for the training options.

A recipe is a bundle of option values to start from; options given
explicitly (on the command line or in a --config file) win over it. The
values are TrainConfig fields, so what a run used is in its args.json either
way, with ``recipe`` naming the bundle it started from. No torch here: the
commands read these before anything heavy is imported.
"""

from __future__ import annotations

import json

from vqtool.errors import VQError
from vqtool.files import read_text

RECIPES = {
    # the loop's defaults with the cheap, almost always helpful regularisers
    "basic": {"augment": "basic", "label_smoothing": 0.1, "warmup_epochs": 1, "scheduler": "cosine",
              "optimizer": "adamw", "weight_decay": 0.05},
    # timm / torchvision reference style: TrivialAugment, mixup/CutMix, label smoothing, EMA, warm-up, cosine
    "strong": {"augment": "trivial", "mixup": 0.2, "cutmix": 1.0, "label_smoothing": 0.1, "ema": 0.9998,
               "warmup_epochs": 1, "scheduler": "cosine", "optimizer": "adamw", "weight_decay": 0.05},
}


def recipe_values(name: str, explicit: set[str], epochs: int) -> dict:
    """The values recipe ``name`` sets for the options not in ``explicit`` (its warm-up shortened to leave a run
    of ``epochs`` at least one epoch of its schedule)."""
    if name not in RECIPES:
        raise VQError(f"--recipe {name!r}: choose from {', '.join(RECIPES)}", usage=True)
    values = {key: value for key, value in RECIPES[name].items() if key not in explicit}
    if "warmup_epochs" in values:
        values["warmup_epochs"] = min(values["warmup_epochs"], epochs - 1)
    return values


def describe_recipe(name: str, applied: dict) -> str:
    """The log line saying what a recipe set and which of its options were given explicitly instead."""
    settings = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in applied.items())
    kept = [f"--{key.replace('_', '-')}" for key in RECIPES[name] if key not in applied]
    return f"recipe {name}: {settings}" + (f" (given explicitly: {', '.join(kept)})" if kept else "")


def option_file(path: str) -> tuple[dict, bool]:
    """(option values, from a run?) of a --config file (YAML or JSON; keys are option names, - or _), or of a
    run's args.json (its dataset, data, training and fine-tuning arguments)."""
    try:
        text = read_text(path)
    except OSError as error:
        raise VQError(f"--config {path}: {error.strerror or error}", usage=True) from error
    except UnicodeDecodeError as error:
        raise VQError(f"--config {path}: not a text file (YAML or JSON)", usage=True) from error
    try:
        document = json.loads(text) if path.endswith(".json") else _yaml(text)
    except ValueError as error:
        raise VQError(f"--config {path}: not valid {'JSON' if path.endswith('.json') else 'YAML'} ({error})",
                      usage=True) from error
    if not isinstance(document, dict):
        raise VQError(f"--config {path}: must hold a mapping of option names to values", usage=True)
    if isinstance(document.get("args"), dict) and "command" in document:
        return _run_arguments(document["args"]), True
    return {str(key).replace("-", "_"): value for key, value in document.items()}, False


def _yaml(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(str(error).splitlines()[0]) from error


def _run_arguments(args: dict) -> dict:
    """A run's recorded arguments as option values, keyed as a --config file is (``model`` for --model): its task
    (``task``, which --task reads) and the options of its own section beside the data, training and fine-tuning
    ones, so the replay trains the same task with the same options."""
    task = args.get("task") or _sectioned_task(args)
    values = {"dataset": args.get("dataset"), "task": task}
    for section in ("data", "config", "finetune", task):
        if section and isinstance(args.get(section), dict):
            values.update(args[section])
    return {key: value for key, value in values.items() if value is not None}


def _sectioned_task(args: dict) -> str | None:
    """The task of a run recorded before args.json named it: the task whose own options section it holds."""
    from vqtool.registry import registered_tasks

    return next((name for name in registered_tasks() if isinstance(args.get(name), dict)), None)
