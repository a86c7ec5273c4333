"""vqtool tune: the best trial's --config, continuing a study, workers sharing one, pruned runs, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_class_tree, summary_of

optuna = pytest.importorskip("optuna")

TINY = ("--model", "smallcnn", "--epochs", "1")


@pytest.fixture
def tree(tmp_path):
    return make_class_tree(tmp_path / "stripes", per_class=8, size=16)


def space_file(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def trials_in(storage: str, study: str):
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def test_a_study_continues_after_a_kill_and_its_best_config_runs_again_with_train(run_cli, tree):
    first = summary_of(run_cli("tune", "train", tree, *TINY, "--trials", "2", "--out", "study", "--json", "-q"))
    assert first["trials"]["complete"] == 2 and first["ran"] == 2 and first["stopped"] == "trials"
    storage = f"sqlite:///{Path('study/study.db').resolve()}"
    # a process killed mid-trial left its trial RUNNING: the next process on this host marks it failed
    study = optuna.load_study(study_name=first["study"], storage=storage)
    abandoned = study.ask()
    abandoned.set_user_attr("host", os.uname().nodename)
    abandoned.set_user_attr("pid", 2 ** 22 + 12345)  # above the kernel's pid_max: no such process
    summary = summary_of(run_cli("tune", "train", tree, *TINY, "--trials", "3", "--out", "study", "--json", "-q",
                                 "--keep-checkpoints", "1"))
    assert summary["ran"] == 1 and summary["trials"] == {"complete": 3, "pruned": 0, "fail": 1, "running": 0}
    states = {t.number: t.state.name for t in trials_in(storage, first["study"])}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "FAIL", 3: "COMPLETE"}
    assert sorted(p.name for p in Path("study").glob("trial-*")) == ["trial-0000", "trial-0001", "trial-0003"]
    # the same study with other options is refused, not mixed
    changed = run_cli("tune", "train", tree, *TINY, "--trials", "4", "--out", "study", "--metric", "macro_f1")
    assert changed.exit_code == 2 and changed.stderr.count("\n") == 1
    assert "was started with other metric" in changed.stderr
    # the best trial: its folder named, its options as a --config file that `train` accepts and reproduces
    best = summary["best"]
    assert Path(best["run_dir"]) == Path("study", f"trial-{best['trial']:04d}").resolve()
    config = yaml.safe_load(Path(summary["config_file"]).read_text())
    assert config["model"] == "smallcnn" and config["epochs"] == 1 and config["dataset"] == str(tree)
    assert set(best["params"]) == {"lr", "weight_decay", "label_smoothing", "batch_size", "optimizer", "recipe"}
    assert all(config[name] == value for name, value in best["params"].items() if value is not None)
    # only the best trial keeps its weights (--keep-checkpoints 1); every trial keeps what `vqtool runs` reads
    assert [p.parent.name for p in Path("study").glob("trial-*/model.safetensors")] == [Path(best["run_dir"]).name]
    assert len(list(Path("study").glob("trial-*/model.json"))) == 3
    again = summary_of(run_cli("train", "--config", summary["config_file"], "--out", "again", "--json", "-q"))
    assert again["val_top1"] == pytest.approx(best["value"], abs=1e-6)
    assert Path(summary["figure"]).stat().st_size > 10_000
    listed = summary_of(run_cli("runs", "study", "--json"))
    assert [(row["name"], row["status"], row["command"]) for row in listed] == [
        ("trial-0000", "finished", "train"), ("trial-0001", "finished", "train"), ("trial-0003", "finished", "train")]


def test_the_best_trial_s_config_runs_again_with_finetune(run_cli, tree, tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(1)
    weights = tmp_path / "resnet10t.safetensors"
    save_file(timm.create_model("resnet10t").state_dict(), str(weights))
    space = space_file(tmp_path / "space.yaml", {"epochs": 2, "lr": {"low": 1e-3, "high": 3e-2, "log": True},
                                                 "head": ["linear", "mlp"]})
    summary = summary_of(run_cli("tune", "finetune", tree, "--model", "timm/resnet10t", "--weights", weights,
                                 "--imgsz", "32", "--freeze", "backbone", "--space", space, "--trials", "2",
                                 "--out", "study", "--json", "-q"))
    best = summary["best"]
    assert set(best["params"]) == {"lr", "weight_decay", "label_smoothing", "head", "batch_size"}  # freeze: given
    config = yaml.safe_load(Path(summary["config_file"]).read_text())
    assert config["freeze"] == "backbone" and config["epochs"] == 2 and config["weights"] == str(weights)
    again = summary_of(run_cli("finetune", "--config", summary["config_file"], "--out", "again", "--json", "-q"))
    assert again["feature_cache"] is True
    assert again["val_top1"] == pytest.approx(best["value"], abs=1e-6)


@pytest.mark.slow
def test_two_processes_on_one_storage_never_run_the_same_trial(tree, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    workers = [subprocess.Popen([sys.executable, "-m", "vqtool", "tune", "train", str(tree), *TINY, "--trials", "6",
                                 "--storage", storage, "--study", "shared", "--out", f"worker{i}", "--pruner", "none",
                                 "--json", "-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-2000:]
    ran = [json.loads(stdout)["ran"] for stdout, _ in outputs]
    trials = trials_in(storage, "shared")
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == sum(ran) >= 6 and min(ran) >= 1  # both worked, never on one number
    folders = [p.name for i in range(2) for p in Path(f"worker{i}").glob("trial-*")]
    assert sorted(folders) == sorted(f"trial-{n:04d}" for n in numbers)
    for trial in trials:  # each trial's run folder is the one its worker named
        assert Path(trial.user_attrs["run_dir"]).is_dir()


def test_a_pruned_trial_s_run_folder_reads_as_pruned(tree, run_cli):
    from vqtool.data import DataOptions
    from vqtool.reporter import SILENT
    from vqtool.tuning.space import default_space
    from vqtool.tuning.study import Settings, tune_job
    from vqtool.tuning.trial import Job

    job = Job("train", str(tree), DataOptions(), {"model": "smallcnn", "epochs": 3}, {"model", "epochs"})
    always = optuna.pruners.ThresholdPruner(lower=2.0, n_warmup_steps=0)  # an accuracy is never 2: prunes epoch 1
    with pytest.raises(Exception, match="no trial has completed yet"):
        tune_job(job, default_space("train"), Settings("p", Path("study"), trials=2), reporter=SILENT,
                 given={"model": "smallcnn"}, pruner=always)
    rows = summary_of(run_cli("runs", "study", "--json"))
    assert [(row["name"], row["status"], row["epochs"]) for row in rows] == [("trial-0000", "pruned", 1),
                                                                             ("trial-0001", "pruned", 1)]
    states = {t.state.name for t in trials_in(f"sqlite:///{Path('study/study.db').resolve()}", "p")}
    assert states == {"PRUNED"}


@pytest.mark.parametrize("document, message", [
    ("lr: [", "not valid YAML"),
    ("- lr", "must be a mapping"),
    ("learning_rate: {low: 0.1, high: 1}", "learning_rate: not an option vqtool tune train can search"),
    ("lr: {low: 0.1, high: 0.01}", "lr: low must be below high"),
    ("lr: {low: 0, high: 0.1, log: true}", "a log range needs low > 0"),
    ("lr: {low: 0.001, hi: 0.1}", "unknown key hi"),
    ("optimizer: [adam, lion]", "optimizer lion: --optimizer 'lion': choose from"),
    ("batch_size: {low: 0, high: 64}", "batch_size 0: --batch-size must be >= 1, not 0"),
    ("optimizer: {low: 1, high: 2}", "a str option takes a list of choices"),
    ("seed: [1, 2]", "seed: not an option"),
    ("label_smoothing: 1.5", "--label-smoothing must be in [0, 1)"),
    ("epochs: [3, 3]", "a list of distinct values"),
])
def test_a_bad_space_file_is_one_error_line(run_cli, tree, tmp_path, document, message):
    path = tmp_path / "space.yaml"
    path.write_text(document)
    result = run_cli("tune", "train", tree, *TINY, "--trials", "1", "--space", path)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"Error: --space {path}") and message in result.stderr, result.stderr
    assert not Path("runs").exists()


@pytest.mark.parametrize("storage, message", [
    ("not a url", "not a database URL"),
    ("nosuchdb://host/db", "no database kind 'nosuchdb'"),
    ("sqlite:////no/such/folder/study.db", "unable to open database file"),
    ("postgresql://me:secret@localhost:1/db", "postgresql://me:***@localhost:1/db"),
    ("journal:/no/such/folder/study.log", "no folder /no/such/folder"),
])
def test_a_bad_storage_is_one_error_line(run_cli, tree, storage, message):
    result = run_cli("tune", "train", tree, *TINY, "--trials", "1", "--storage", storage)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: --storage") and message in result.stderr
    assert "secret" not in result.stderr and not Path("runs").exists()


@pytest.mark.parametrize("args, message", [
    ((), "give --trials N or --budget TIME"),
    (("--budget", "ten minutes"), "use seconds or a duration"),
    (("--trials", "1", "--study", "a/b"), "--study 'a/b': use letters"),
])
def test_bad_study_options_are_one_error_line(run_cli, tree, args, message):
    result = run_cli("tune", "train", tree, *TINY, *args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_without_optuna_the_error_says_how_to_install_it(run_cli, tree, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    result = run_cli("tune", "train", tree, "--trials", "1")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "pip install 'vqtool[tune]'" in result.stderr


def test_the_default_spaces_hold_only_options_of_their_command():
    from vqtool.tuning.space import default_space

    assert {"freeze", "head", "backbone_lr"} <= set(default_space("finetune").parameters)
    assert not {"freeze", "head"} & set(default_space("train").parameters)
    assert "recipe" in default_space("train").parameters


@pytest.mark.slow
def test_sigterm_stops_after_the_current_trial_with_the_study_intact(tree, tmp_path):
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    worker = subprocess.Popen([sys.executable, "-m", "vqtool", "tune", "train", str(tree), *TINY, "--trials", "50",
                               "--out", "study"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not Path("study/trial-0001").is_dir() and time.monotonic() < deadline:  # trial 1 is under way
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    stdout, stderr = worker.communicate(timeout=300)
    assert worker.returncode == 143, stderr[-2000:]
    assert "SIGTERM: stopping after the current trial" in stderr
    assert stderr.strip().splitlines()[-1].startswith("Terminated: study train-stripes stopped after its current trial")
    assert "top trials" in stdout and Path("study/best.yaml").is_file()
    trials = trials_in(f"sqlite:///{Path('study/study.db').resolve()}", "train-stripes")
    assert len(trials) >= 2 and {t.state.name for t in trials} == {"COMPLETE"}  # trial 1 finished, none after it
    assert sorted(p.name for p in Path("study").glob("trial-*")) == [f"trial-{t.number:04d}" for t in trials]


def test_a_parameter_whose_condition_a_fixed_option_rules_out_is_not_searched():
    from vqtool.tuning.space import default_space

    space = default_space("finetune")
    assert "backbone_lr" in space.reachable({"freeze": "backbone"}).parameters  # freeze is searched: it may apply
    fixed = space.without({"freeze"}).reachable({"freeze": "backbone"})
    assert "backbone_lr" not in fixed.parameters and "lr" in fixed.parameters
    assert "backbone_lr" in space.without({"freeze"}).reachable({"freeze": "2"}).parameters


@pytest.mark.slow
def test_a_study_whose_trials_all_failed_takes_corrected_options(run_cli, tree):
    failed = run_cli("tune", "train", tree, *TINY, "--trials", "2", "--space", "missing.yaml")  # refused: no trial
    assert failed.exit_code == 2 and "missing.yaml" in failed.stderr
    broken = run_cli("tune", "train", tree, *TINY, "--trials", "2", "--class-weights", "nothere.json")
    assert broken.exit_code == 1 and "two trials in a row failed the same way" in broken.stderr
    fixed = summary_of(run_cli("tune", "train", tree, *TINY, "--trials", "1", "--json", "-q"))
    assert fixed["trials"]["complete"] == 1 and fixed["trials"]["fail"] == 2  # the same study, no longer refused


@pytest.fixture
def squares(tmp_path):
    """A multi-label list: 48 images of coloured squares, 32 train and 16 val."""
    from test_multilabel import make_squares

    rows = make_squares(tmp_path / "squares", count=48)
    listing = tmp_path / "squares" / "labels.csv"
    listing.write_text("path,labels,split\n" + "".join(f"{p},{'|'.join(labels)},{'train' if i < 32 else 'val'}\n"
                                                       for i, (p, labels) in enumerate(rows)))
    return listing


def test_a_multilabel_study_compares_map_and_its_best_config_runs_the_multilabel_task_again(run_cli, squares):
    # --loss asl alone makes the runs multi-label; best.yaml names the task so that `train --config` does too
    summary = summary_of(run_cli("tune", "train", squares, "--loss", "asl", "--model", "cnn-bn", "--imgsz", "24",
                                 "--epochs", "1", "--trials", "2", "--out", "study", "--json", "-q"))
    assert summary["metric"] == "map" and summary["trials"]["complete"] == 2
    assert "label_smoothing" not in summary["best"]["params"]  # multi-label runs have none to search
    for row in summary["top"]:
        args = json.loads(Path(row["run_dir"], "args.json").read_text())["args"]
        assert args["multilabel"]["loss"] == "asl"
        model = json.loads(Path(row["run_dir"], "model.json").read_text())
        assert model["task"] == "multilabel" and len(model["thresholds"]) == 3  # chosen on val, as multilabel does
        assert row["value"] == pytest.approx(model["metrics"]["val_map"], abs=1e-6)
    config = yaml.safe_load(Path(summary["config_file"]).read_text())
    assert config["task"] == "multilabel" and config["loss"] == "asl"
    again = summary_of(run_cli("train", "--config", summary["config_file"], "--out", "again", "--json", "-q"))
    assert again["task"] == "multilabel"
    assert again["val_map"] == pytest.approx(summary["best"]["value"], abs=1e-6)


@pytest.mark.parametrize("data, args, message", [
    ("tree", ("--metric", "map"), "--metric map does not measure classification runs; choose val_top1 or "),
    ("squares", ("--task", "multilabel", "--metric", "val_top1"), "--metric val_top1 does not measure multilabel "
                                                                  "runs; choose map"),
    ("squares", ("--task", "multilabel", "--label-smoothing", "0.1"), "--label-smoothing does not apply to multilabel"),
    ("tree", ("--task", "multilabel"), "multi-label data is a CSV/TSV or text list"),  # before any trial
])
def test_a_metric_or_option_that_does_not_fit_the_task_is_one_error_line(run_cli, request, data, args, message):
    result = run_cli("tune", "train", request.getfixturevalue(data), *TINY, "--trials", "1", *args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: ") and message in result.stderr, result.stderr
    assert not Path("runs").exists()


def test_a_multilabel_space_file_may_not_search_label_smoothing(run_cli, squares, tmp_path):
    path = space_file(tmp_path / "space.yaml", {"label_smoothing": [0.0, 0.1]})
    result = run_cli("tune", "train", squares, "--task", "multilabel", *TINY, "--trials", "1", "--space", path)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "label_smoothing: not an option vqtool tune train can search for multilabel runs" in result.stderr
