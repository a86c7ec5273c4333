"""--log tensorboard|mlflow read back with the libraries' own readers, and `vqtool runs` / `runs compare`.

What each tracker holds must be what metrics.csv holds: TensorBoard's
EventAccumulator and MLflow's search_runs / metric histories are compared with
the run folder's own files.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import summary_of

QUICK = ("--epochs", "2", "--batch-size", "8", "-q")


def csv_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def csv_columns(run: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv as column -> [(epoch, value)], empty cells left out."""
    columns = {}
    for row in csv_rows(run):
        for key, value in row.items():
            if key != "epoch" and value != "":
                columns.setdefault(key, []).append((int(row["epoch"]), float(value)))
    return columns


def flattened_args(run: Path) -> dict[str, str]:
    from vqtool.runs.trackers import flatten

    return {key: str(value) for key, value in flatten(json.loads((run / "args.json").read_text())["args"]).items()}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- TensorBoard ------------------------------------------------------------------------------------


def test_tensorboard_holds_exactly_the_epochs_of_metrics_csv(run_cli, class_tree):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vqtool.runs.trackers import scalar_tag

    summary = summary_of(run_cli("train", class_tree, *QUICK, "--out", "run", "--log", "tensorboard", "--json"))
    events = EventAccumulator("run/tb", size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    columns = csv_columns(Path("run"))
    assert {"lr", "train_loss", "train_top1", "val_loss", "val_top1", "images_per_second"} <= columns.keys()
    for column, values in columns.items():
        logged = [(event.step, event.value) for event in events.Scalars(scalar_tag(column))]
        assert logged == [(epoch, np.float32(value)) for epoch, value in values], column  # stored as float32
    epoch_tags = {scalar_tag(column) for column in columns}
    assert {tag for tag in events.Tags()["scalars"] if not tag.startswith("final/")} == epoch_tags
    assert [event.value for event in events.Scalars("final/val_top1")] == [np.float32(summary["val_top1"])]
    assert {"curves", "confusion", "mistakes"} >= set(events.Tags()["images"]) >= {"curves", "confusion"}
    assert events.PluginTagToContent("hparams")  # the HParams dashboard's experiment and session records


# --- MLflow -------------------------------------------------------------------------------------------


def assert_mlflow_run_equals_folder(client, run_id: str, run: Path) -> None:
    logged = client.get_run(run_id)
    assert logged.data.params == flattened_args(run)
    for column, values in csv_columns(run).items():
        history = sorted((metric.step, metric.value) for metric in client.get_metric_history(run_id, column))
        assert history == values, column
    assert logged.data.tags["command"] == "train" and logged.data.tags["model"] == "smallcnn"
    assert logged.data.tags["dataset"] == "stripes" and logged.data.tags["vqtool_version"]


@pytest.mark.slow
def test_mlflow_run_holds_the_args_and_epochs_and_a_resume_continues_it(run_cli, class_tree, tmp_path,
                                                                         monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    summary = summary_of(run_cli("train", class_tree, *QUICK, "--out", "run", "--log", "mlflow", "--json"))
    client = mlflow.MlflowClient(uri)
    (found,) = client.search_runs([client.get_experiment_by_name("stripes").experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    assert json.loads(Path("run/mlflow.json").read_text())["run_id"] == found.info.run_id
    assert_mlflow_run_equals_folder(client, found.info.run_id, Path("run"))
    assert {item.path for item in client.list_artifacts(found.info.run_id)} == {
        "model.json", "model.safetensors", "metrics.csv", "curves.png"}
    assert client.get_run(found.info.run_id).data.metrics["final/val_top1"] == summary["val_top1"]

    # --resume (here: two more epochs) logs into the same MLflow run, with no --log needed
    assert summary_of(run_cli("train", "--resume", "run", "--epochs", "4", "--json", "-q"))["epochs"] == 4
    (again,) = client.search_runs([client.get_experiment_by_name("stripes").experiment_id])
    assert again.info.run_id == found.info.run_id and again.info.status == "FINISHED"
    assert len(csv_rows(Path("run"))) == 4
    assert_mlflow_run_equals_folder(client, found.info.run_id, Path("run"))


def test_mlflow_run_in_the_experiment_named_holds_the_args_and_epochs(run_cli, class_tree, tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("VQTOOL_LOG", "mlflow")  # the environment variable asks for the tracker
    summary_of(run_cli("train", class_tree, "--epochs", "1", "-q", "--out", "run", "--experiment", "nightly",
                       "--json"))
    client = mlflow.MlflowClient(uri)
    (found,) = client.search_runs([client.get_experiment_by_name("nightly").experiment_id])
    assert_mlflow_run_equals_folder(client, found.info.run_id, Path("run"))


def test_an_unreachable_tracking_server_warns_quickly_and_the_run_completes(run_cli, class_tree, monkeypatch,
                                                                          reporter):
    from vqtool.runs.trackers import RunIdentity, TrackingOptions, open_trackers

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    for variable in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(variable, raising=False)
    result = run_cli("train", class_tree, *QUICK, "--out", "run", "--log", "mlflow", "--json")
    summary = summary_of(result)
    assert summary["epochs"] == 2 and len(csv_rows(Path("run"))) == 2
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: mlflow")]
    assert len(warnings) == 1 and "training goes on" in warnings[0], result.stderr
    assert not Path("run/mlflow.json").exists()

    started = time.monotonic()  # the seconds it costs: MLflow's own defaults would retry for minutes
    trackers = open_trackers(TrackingOptions(("mlflow",)), RunIdentity(Path("run"), "train", "smallcnn", "x"),
                             experiment_default="x", logged_epoch=0, reporter=reporter)
    assert time.monotonic() - started < 10 and trackers.names == () and len(reporter.warnings) == 1


@pytest.mark.parametrize("tracker, module", [("mlflow", "mlflow"), ("tensorboard", "tensorboard")])
def test_a_tracker_not_installed_is_a_usage_error_naming_the_extra(run_cli, monkeypatch, tracker, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed: import fails
    result = run_cli("train", "no-such-dataset", "--log", tracker)  # refused before the data is looked at
    assert result.exit_code == 2
    # vqtool is not on an index: the command that works is the library itself, or the extra from a clone
    assert result.stderr.strip().startswith(f"Error: --log {tracker} needs {tracker}, which is not installed: "
                                            f"pip install '{tracker}")
    assert result.stderr.strip().endswith(f"(or, in a clone of vqtool, pip install -e '.[{tracker}]')")
    assert "vqtool[" not in result.stderr
    assert not Path("runs").exists()


def test_an_unknown_tracker_is_refused(run_cli):
    result = run_cli("train", "--log", "wandb")
    assert result.exit_code == 2 and "'wandb': choose from tensorboard, mlflow" in result.stderr


# --- vqtool runs -----------------------------------------------------------------------------------


def vqtool_process(*args, cwd, env=None):
    """``python -m vqtool ARGS`` in a fresh process of this checkout, outside pytest's reach (Ultralytics turns
    its integrations off in a process that pytest runs in)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    environment.update(PYTHONPATH=str(Path(__file__).parents[1]), **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "vqtool", *map(str, args)], cwd=cwd, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def killed_after_first_epoch(run: Path, *args) -> None:
    process = vqtool_process("train", *args, "--epochs", "30", "--out", run, "-q", cwd=run.parent)
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory) -> tuple[Path, Path]:
    """A detector trained for one epoch from yolov8n.yaml on a few 32 px images, with --log tensorboard."""
    from test_detect import make_yolo_dataset

    data = make_yolo_dataset(tmp_path_factory.mktemp("shapes"), train=4, val=2, size=32)
    home, work = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("work")
    process = vqtool_process("train", data, "--epochs", "1", "--imgsz", "32", "--out", work / "runs" / "detector",
                             "--log", "tensorboard", "-q", cwd=work, env={"VQTOOL_HOME": str(home)})
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    return work / "runs" / "detector", home


@pytest.mark.slow
def test_a_detector_run_with_log_tensorboard_leaves_event_files(detector_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, home = detector_run
    events = list(run.glob("ultralytics/events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert "metrics/mAP50-95(B)" in accumulator.Tags()["scalars"]
    settings = json.loads((home / "ultralytics" / "Ultralytics" / "settings.json").read_text())
    assert settings["tensorboard"] is False and settings["mlflow"] is False  # on for that run only


@pytest.mark.slow
def test_a_detector_run_with_log_mlflow_is_one_mlflow_run(tmp_path):
    import mlflow

    from test_detect import make_yolo_dataset

    data = make_yolo_dataset(tmp_path / "shapes", train=4, val=2, size=32)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = vqtool_process("train", data, "--epochs", "1", "--imgsz", "32", "--out", tmp_path / "run",
                             "--log", "mlflow", "--experiment", "shapes", "-q", cwd=tmp_path,
                             env={"VQTOOL_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": uri})
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    (found,) = client.search_runs([client.get_experiment_by_name("shapes").experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    assert "metrics/mAP50-95B" in found.data.metrics
    assert json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"] == found.info.run_id


@pytest.mark.slow
def test_runs_lists_a_finished_an_interrupted_and_a_detector_run(run_cli, class_tree, detector_run):
    detector_run = detector_run[0]
    runs = detector_run.parent
    summary_of(run_cli("train", class_tree, *QUICK, "--out", runs / "finished", "--json"))
    killed_after_first_epoch(runs / "killed", class_tree)
    rows = {row["name"]: row for row in json.loads(run_cli("runs", runs, "--json").stdout)}
    assert set(rows) == {"finished", "killed", "detector"}
    finished, killed, detector = rows["finished"], rows["killed"], rows["detector"]
    model_json = json.loads((runs / "finished" / "model.json").read_text())["metrics"]
    assert finished["status"] == "finished" and finished["command"] == "train" and finished["model"] == "smallcnn"
    assert finished["dataset"] == "stripes" and finished["epochs"] == 2
    assert (finished["best_epoch"], finished["val_top1"]) == (model_json["best_epoch"], model_json["val_top1"])
    assert finished["test_top1"] is None and finished["val_map50_95"] is None  # the stripes have no test split
    assert finished["seconds"] == pytest.approx(sum(float(r["seconds"]) for r in csv_rows(runs / "finished")),
                                                abs=0.01)
    assert killed["status"] == "interrupted" and 1 <= killed["epochs"] < 30
    assert detector["status"] == "finished" and detector["model"] == "yolov8n.yaml" and detector["epochs"] == 1
    assert detector["val_map50_95"] == float(csv_rows(detector_run)[0]["map50_95"]) and detector["val_top1"] is None
    by_status = json.loads(run_cli("runs", runs, "--json", "--filter", "status=finished", "--sort", "name").stdout)
    assert [row["name"] for row in by_status] == ["detector", "finished"]


def test_runs_reports_running_and_interrupted_by_the_status_file(run_cli, class_tree):
    summary_of(run_cli("train", class_tree, "--epochs", "1", "-q", "--out", "runs/a", "--json"))
    status = json.loads(Path("runs/a/status.json").read_text())
    assert status["status"] == "finished" and status["pid"] == os.getpid()
    Path("runs/a/status.json").write_text(json.dumps({**status, "status": "running"}))  # this process: alive
    assert json.loads(run_cli("runs", "--json").stdout)[0]["status"] == "running"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    Path("runs/a/status.json").write_text(json.dumps({**status, "status": "running", "pid": gone.pid}))
    assert json.loads(run_cli("runs", "--json").stdout)[0]["status"] == "interrupted"
    Path("runs/broken").mkdir()
    Path("runs/broken/args.json").write_text("{ damaged")
    Path("runs/broken/state.pt").write_bytes(b"")
    result = run_cli("runs", "--json")
    assert [row["name"] for row in json.loads(result.stdout)] == ["a"]
    assert "runs/broken: left out, cannot be read" in result.stderr


def test_ctrl_c_marks_a_run_interrupted(run_cli, class_tree, monkeypatch):
    import vqtool.classification.training.loop as loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "run_epoch", interrupted)
    assert run_cli("train", class_tree, "--epochs", "1", "-q", "--out", "runs/a").exit_code == 130
    assert json.loads(Path("runs/a/status.json").read_text())["status"] == "interrupted"


def test_runs_compare_lists_exactly_the_differing_arguments(run_cli, class_tree, tmp_path):
    summary_of(run_cli("train", class_tree, *QUICK, "--out", "runs/a", "--json"))
    summary_of(run_cli("train", class_tree, *QUICK, "--out", "runs/b", "--lr", "0.01", "--optimizer", "sgd",
                       "--json"))
    comparison = json.loads(run_cli("runs", "compare", "runs/a", "runs/b", "--png", "both.png", "--json").stdout)
    assert comparison["differing_args"] == {"config.lr": [0.002, 0.01], "config.optimizer": ["adam", "sgd"]}
    assert comparison["runs"] == ["a", "b"] and comparison["metrics"]["epochs"] == [2, 2]
    assert comparison["metrics"]["val_top1"] == [json.loads(Path(f"runs/{name}/model.json").read_text())
                                                 ["metrics"]["val_top1"] for name in "ab"]
    assert Path("both.png").read_bytes().startswith(b"\x89PNG")
    table = run_cli("runs", "compare", "runs/a", "runs/b").stdout
    assert "config.optimizer" in table and "config.seed" not in table


def test_runs_refuses_a_bad_filter_or_sort(run_cli):
    Path("runs").mkdir()
    assert "KEY=VALUE" in run_cli("runs", "--filter", "status").stderr
    assert run_cli("runs", "--sort", "colour").exit_code == 2


def write_detector_run(folder: Path, model: str) -> None:
    """The files `vqtool runs` reads of a finished detector run (a trained one: the slow tests above)."""
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps({"command": "finetune", "argv": [], "args": {
        "task": "detection", "ultralytics": {"model": model, "epochs": 1}}}))
    (folder / "metrics.csv").write_text("epoch,seconds,map50,map50_95\n1,3.5,0.25,0.125\n")
    (folder / "status.json").write_text(json.dumps({"status": "finished", "model": model, "dataset": "shapes",
                                                    "started": "2026-12-07T12:00:00+0000"}))
    (folder / "model.pt").write_bytes(b"")


def test_runs_table_fits_the_width_never_cuts_the_name_and_counts_the_backbone_pass(run_cli, class_tree, tmp_path,
                                                                                    monkeypatch):
    import timm
    from safetensors.torch import save_file

    name = "finetune-stripes-resnet10t-frozen-backbone-long-name"
    save_file(timm.create_model("resnet10t").state_dict(), str(tmp_path / "w.safetensors"))
    tuned = summary_of(run_cli("finetune", class_tree, "--model", "timm/resnet10t", "--weights",
                               tmp_path / "w.safetensors", "--imgsz", "32", *QUICK, "--out", f"runs/{name}", "--json"))
    assert tuned["feature_cache"] is True
    # a detector fine-tuned from a weights file: status.json names the file by its path
    write_detector_run(Path("runs/tuned-detector"), "/data/weights/fall.pt")
    rows = {row["name"]: row for row in json.loads(run_cli("runs", "--json").stdout)}
    # the feature-cache run's time is the backbone pass that made the cache plus the head's epochs
    assert rows[name]["seconds"] == pytest.approx(tuned["backbone_seconds"] + tuned["head_seconds"], abs=0.02)
    assert tuned["backbone_seconds"] > 0 and rows["tuned-detector"]["model"] == "fall.pt"
    for width in (60, 80, 200):
        monkeypatch.setenv("COLUMNS", str(width))
        result = run_cli("runs")
        lines = result.stdout.splitlines()
        assert all(len(line) <= max(width, len(name) + 2) for line in lines), result.stdout
        assert name in result.stdout and "…" not in result.stdout  # whole names and cells, never `finetu…`
        assert f"{rows[name]['seconds']:.2f} s" in result.stdout or width < 120
        if width == 200:
            assert "left out" not in result.stderr and "command" in lines[0] and "date" in lines[0]
        else:
            assert "left out for the width of" in result.stderr
