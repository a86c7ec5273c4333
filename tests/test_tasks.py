"""The task protocol: a task registered in-process (as a plugin's would be) is trained, evaluated and used to
predict through the CLI, with no command knowing it; the dispatch picks tasks by target and by option."""

import json
import re

import pytest

from vqtool.registry import Task, register_task, registered_tasks, unregister_task


class ToyTask(Task):
    """Owns ``*.toy`` targets; its entry points answer with what they were asked."""

    order = 5
    options = frozenset({"epochs", "seed", "device", "imgsz", "data_dir"})

    def owns(self, target):
        return str(target).endswith(".toy")

    def takes(self, command):
        return self.options if command in ("train", "finetune") else frozenset()

    def train(self, request):
        return {"task": self.name, "dataset": request.dataset, "epochs": request.params["epochs"]}

    def evaluate(self, request):
        return {"model": request.target, "split": request.params["split"] or "test", "score": 0.5}

    def view(self, report):
        return {"table": {"headers": ["model", "score"], "rows": [[report["model"], report["score"]]]},
                "lines": [f"toy score {report['score']}"]}

    def predict(self, sources, weights, options):
        from vqtool.data.inputs import expand_sources

        return iter({"path": item.path, "toy": weights} for item in expand_sources(list(sources))), ["a"]

    def predict_output(self, classes, options):
        class Counted:
            failed = 0

            def add(self, record):
                pass

            def lines(self, seconds):
                return ["toy done"]

        return {"csv": ["path", "toy"], "csv_values": lambda r: [r["path"], r["toy"]], "table_header": "toy",
                "table_row": lambda r: r["path"], "summary": Counted()}


@pytest.fixture
def toy():
    register_task("toy")(ToyTask)
    yield registered_tasks()["toy"]
    unregister_task("toy")


def test_a_toy_task_trains_evaluates_and_predicts_through_the_cli(run_cli, toy, tmp_path):
    trained = run_cli("train", "data.toy", "--epochs", "3", "--json")
    assert trained.exit_code == 0, trained.output
    assert json.loads(trained.stdout) == {"task": "toy", "dataset": "data.toy", "epochs": 3}

    evaluated = run_cli("eval", "model.toy", "--split", "val")
    assert evaluated.exit_code == 0, evaluated.output
    assert "toy score 0.5" in evaluated.stdout and "model.toy" in evaluated.stdout

    (tmp_path / "x.png").write_bytes(b"not decoded by the toy")
    predicted = run_cli("predict", "x.png", "-w", "model.toy", "--format", "csv")
    assert predicted.exit_code == 0, predicted.output
    assert predicted.stdout.splitlines() == ["path,toy", "x.png,model.toy"]


def test_options_the_task_does_not_take_are_one_usage_error(run_cli, toy):
    result = run_cli("train", "data.toy", "--label-smoothing", "0.1", "--mixup", "0.2")
    assert result.exit_code == 2
    assert "--label-smoothing, --mixup do not apply to toy models" in result.stderr


def test_an_entry_point_a_task_lacks_is_a_usage_error(run_cli, toy):
    result = run_cli("finetune", "data.toy")
    assert result.exit_code == 2 and "fine-tuning is not available for toy models" in result.stderr


def test_the_task_is_chosen_by_task_option_then_selecting_options_then_targets():
    from vqtool.tasks import task_for

    assert task_for("digits").name == "classification"
    assert task_for("data.yaml").name == "detection"
    assert task_for("data.yaml", typed={"labels_from": "boxes"}).name == "multilabel"
    assert task_for("labels.csv", typed={"task": "multilabel"}).name == "multilabel"
    with pytest.raises(Exception, match="unknown task 'segmentation'"):
        task_for("digits", typed={"task": "segmentation"})


def test_no_command_names_a_task():
    from pathlib import Path

    import vqtool.commands

    for module in Path(vqtool.commands.__file__).parent.glob("*.py"):
        text = module.read_text()
        assert "DETECTION" not in text and "CLASSIFIER_ONLY" not in text, module.name


# --- one source for options and defaults ---------------------------------------------------------------------


def _config_sources():
    """command path -> the config objects its options feed (instances, whose values are its defaults, or classes)."""
    from vqtool.classification.config import (FINETUNE_DEFAULTS, BenchmarkOptions, FinetuneOptions, PredictOptions,
                                              TrainConfig)
    from vqtool.data import DataOptions
    from vqtool.detection.predict import DetectOptions
    from vqtool.exporting import ExportOptions
    from vqtool.inspection.options import InspectOptions
    from vqtool.multilabel.config import MultilabelOptions
    from vqtool.tuning import Settings

    train = [TrainConfig(), DataOptions(), MultilabelOptions()]
    finetune = [FINETUNE_DEFAULTS, DataOptions(), MultilabelOptions(), FinetuneOptions()]
    return {"train": train, "finetune": finetune, "tune train": train + [Settings], "tune finetune": finetune + [Settings],
            "predict": [PredictOptions], "export": [ExportOptions], "benchmark": [BenchmarkOptions, DataOptions],
            "detect": [DetectOptions], "inspect": [InspectOptions, DataOptions], "eval": [DataOptions],
            "confusion": [DataOptions]}


# Commands whose options feed no config dataclass (their defaults live in the Click option alone), and why.
WITHOUT_CONFIG = {
    "cache": "a group", "cache clear": "no defaulted options", "cache list": "no defaulted options",
    "conv": "a group", "conv apply": "options passed as arguments to vqtool.conv functions",
    "conv features": "options passed as arguments", "conv filters": "options passed as arguments",
    "conv shape": "options passed as arguments", "conv summary": "options passed as arguments",
    "datasets": "a listing", "models": "a listing", "plugins": "a listing",
    "runs": "a group", "runs compare": "a listing", "runs list": "a listing", "tune": "a group",
    "tinyvgg": "the example plugin's command (present when the plugin is installed), outside vqtool's configs",
}
# Config fields whose option is hand-written (not made from the field), or that no option sets, and why; the
# default of a hand-written one is compared with the field's.
NOT_MADE_FROM_FIELD = {
    ("detect", "classes"): "NAME,... : a comma-separated list the command splits",
    ("benchmark", "formats"): "a comma-separated list", ("benchmark", "batches"): "a comma-separated list",
    ("export", "overwrite"): "the --overwrite every command that writes files shares",
    ("tune", "budget"): "a duration (90s, 30m) made into seconds",
    ("tune", "study_dir"): "--out: its default is made from the study's name",
    ("inspect", "neighbours"): "no option: how many nearest others each image is compared with is fixed",
}


try:
    from click._utils import UNSET
except ImportError:  # Click < 8.3 gives None itself
    UNSET = object()


def _commands():
    import click

    from vqtool.cli import cli

    def walk(group, context, path):
        for name in group.list_commands(context):
            command = group.get_command(context, name)
            yield " ".join(path + [name]), command
            if isinstance(command, click.Group):
                yield from walk(command, click.Context(command, parent=context, info_name=name), path + [name])

    return list(walk(cli, click.Context(cli, info_name="vqtool"), []))


def option_problems(command, configs, command_name: str, listed=()) -> list[str]:
    """How ``command``'s options differ from the fields of ``configs`` (instances or dataclasses): an option
    field's option must be made from it (a FieldOption, not a hand-written option with its name) with the field's
    default (the instance's value), help and type; any other field with a default has an option made from a field
    (--device: PredictOptions'), or one of ``listed``: hand-written with the field's default, or none."""
    import click
    from dataclasses import MISSING, fields

    from vqtool.commands import FieldOption
    from vqtool.option_fields import field_parameters, option_fields

    problems, context = [], click.Context(command, info_name=command_name)
    options = [param for param in command.params if isinstance(param, click.Option)]
    for config in configs:
        made = {item.name: item for item in option_fields(config)}
        for name, parameter in field_parameters(config).items():
            item = made.get(name)
            flags = {item.flag} if item else {"--" + name.replace("_", "-")}
            found = [param for param in options if param.name == parameter or flags & set(param.opts)]
            if item is not None:
                if len(found) != 1 or not isinstance(found[0], FieldOption) or found[0].field.name != name:
                    problems.append(f"{item.flag}: {len(found)} options, not one made from the field")
                else:
                    problems += [f"{item.flag}: its {what} is not the field's"
                                 for what in _differences(found[0], item, command_name)]
                continue
            default = _default(config, name)
            if default is MISSING or (found and isinstance(found[0], FieldOption)) or (not found and name in listed):
                continue
            if not found or name not in listed:
                problems.append(f"--{name}: {'no option' if not found else 'hand-written'} for a field")
            elif _given(found[0], context) != default:
                problems.append(f"--{name}: its default is not the field's")
    assert set(listed) <= {f.name for config in configs for f in fields(config)}, "listed fields that are none"
    return problems


def _default(config, name: str):
    from dataclasses import fields

    return getattr(config, name) if not isinstance(config, type) else \
        next(item.default for item in fields(config) if item.name == name)


def _given(param, context):
    """What the command gets when the option is not given."""
    value = param.process_value(context, param.get_default(context))
    return None if value is UNSET else value  # Click >= 8.3: an option without a default; the command gets None


def _differences(param, item, command_name: str) -> list[str]:
    """What of the option is not what its field says: default, help, parameter name, type."""
    import click

    from vqtool.commands.types import FiniteFloat, OutputPath

    spec, kind = item.spec, param.type
    help = spec["help"][command_name] if isinstance(spec["help"], dict) else spec["help"]
    if spec["choices"]:
        typed = isinstance(kind, click.Choice) and tuple(kind.choices) == spec["choices"]
    elif spec["folder"] or spec["output"]:
        typed = isinstance(kind, OutputPath if spec["output"] else click.Path)
    elif item.kind is bool:
        typed = param.is_flag and bool(param.secondary_opts) == bool(item.default)
    else:
        typed = isinstance(kind, {float: FiniteFloat, int: (click.IntRange, click.types.IntParamType),
                                  str: click.types.StringParamType}[item.kind])
    bounds = (spec["min"], spec["max"], spec["min_open"], spec["max_open"])
    if isinstance(kind, (click.IntRange, click.FloatRange)):
        typed = typed and (kind.min, kind.max, kind.min_open, kind.max_open) == bounds
    elif spec["min"] is not None or spec["max"] is not None:
        typed = False
    return [what for what, same in (("default", param.default == item.default), ("help", param.help == help),
                                    ("parameter", param.name == item.parameter), ("type", typed)) if not same]


def test_the_options_of_config_fields_are_made_from_them():
    """Every command is walked (subgroups too); each option of a config field is made from it (default, help and type
    live once, in the dataclass), but those listed in NOT_MADE_FROM_FIELD. A command without a config is listed
    above with why."""
    from vqtool.option_fields import option_fields

    sources, commands, checked = _config_sources(), _commands(), 0
    paths = {path for path, _ in commands}
    assert set(sources) <= paths and paths <= set(sources) | set(WITHOUT_CONFIG), "a command unlisted here"
    for path, command in commands:
        if path not in sources:
            continue
        listed = {name for (where, name) in NOT_MADE_FROM_FIELD if where == path.split()[0]}
        assert option_problems(command, sources[path], path.split()[-1], listed) == [], path
        checked += sum(len(option_fields(config)) for config in sources[path])
    assert checked > 200  # train, finetune and their tune subcommands have dozens each, and every command with a config


def test_a_hand_written_option_duplicating_a_field_is_found():
    import click

    from vqtool.classification.config import TrainConfig
    from vqtool.commands import config_options

    def command(**options):
        pass

    hand_written = click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
    duplicated = click.command()(config_options(TrainConfig, "batch_size")(hand_written(command)))
    assert option_problems(duplicated, [TrainConfig], "train")[:2] == [
        "--model: 0 options, not one made from the field", "--epochs: 1 options, not one made from the field"]
    seeded = click.command()(click.option("--seed", type=int, default=0)(command))  # a field that is no option field
    assert "--seed: hand-written for a field" in option_problems(seeded, [TrainConfig], "train")
    shifted = click.command()(config_options(TrainConfig(epochs=3), "epochs")(command))
    assert "--epochs: its default is not the field's" in option_problems(shifted, [TrainConfig], "train")


def test_option_fields_check_their_values_as_their_options_do():
    from vqtool.classification.config import FinetuneOptions, TrainConfig
    from vqtool.errors import VQError
    from vqtool.multilabel.config import MultilabelOptions

    for config, says in ((TrainConfig(epochs=0), "--epochs must be >= 1, not 0"),
                         (TrainConfig(lr=0.0), "--lr must be > 0, not 0.0"),
                         (TrainConfig(label_smoothing=1.0), "--label-smoothing must be in [0, 1), not 1.0"),
                         (TrainConfig(augment_magnitude=31, augment="trivial"), "--augment-magnitude must be in [0, 30]"),
                         (TrainConfig(optimizer="lion"), "--optimizer 'lion': choose from adam, adamw, sgd"),
                         (TrainConfig(mixup=float("nan")), "--mixup must be >= 0, not nan")):
        with pytest.raises(VQError, match=re.escape(says)):
            config.check()
    with pytest.raises(VQError, match="--head 'mlp3': choose from"):
        FinetuneOptions(head="mlp3").check(TrainConfig())
    with pytest.raises(VQError, match="--loss 'focal': choose from bce, asl"):
        MultilabelOptions(loss="focal").check()
    TrainConfig(imgsz=None, augment_magnitude=None).check()  # None where the default is None: not given


def test_the_tasks_that_take_an_option_are_its_fields():
    from vqtool.tasks import get_task

    multilabel = get_task("multilabel").takes("train")
    assert {"label_smoothing", "class_weights", "balanced_sampler", "lr_find"}.isdisjoint(multilabel)
    assert {"mixup", "model_name", "loss", "seed"} <= multilabel
    assert {"label_smoothing", "model_name", "lr_find"} <= get_task("classification").takes("train")
