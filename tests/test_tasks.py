"""The task protocol: a task registered in-process (as a plugin's would be) is trained, evaluated and used to
predict through the CLI, with no command knowing it; the dispatch picks tasks by target and by option."""

import json

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


# --- one source for defaults --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_every_training_default_is_its_config_fields(command):
    """A Click option named like a config field defaults to that field's default: no default is kept twice."""
    from dataclasses import fields

    from vqtool.classification.config import FINETUNE_DEFAULTS, FinetuneOptions, TrainConfig
    from vqtool.classification.task import PARAMETER_NAMES
    from vqtool.cli import cli
    from vqtool.data import DataOptions
    from vqtool.multilabel.config import MultilabelOptions

    training = TrainConfig() if command == "train" else FINETUNE_DEFAULTS
    configs = [training, DataOptions(), MultilabelOptions()] + ([FinetuneOptions()] if command == "finetune" else [])
    expected = {PARAMETER_NAMES.get(f.name, f.name): getattr(config, f.name)
                for config in configs for f in fields(config)}
    import click

    group = cli.get_command(None, command)
    context = click.Context(group)
    params = {param.name: param for param in group.params}
    for name, default in expected.items():
        assert name in params, f"{command}: no option for the config field {name}"
        assert params[name].get_default(context) == default, f"{command} --{name}"
