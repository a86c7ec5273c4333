"""vqtool detect, and train / finetune / eval / confusion of YOLO detectors, offline.

The default tests build everything they need: a tiny synthetic YOLO dataset
(coloured rectangles, 64 px) and a detector trained on it for one epoch from
Ultralytics' own yolov8n.yaml. Tests on the real assets need VQTOOL_TEST_ASSETS.
"""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ASSETS, requires_assets

CLASSES = ("red", "blue")
COLOURS = ((230, 40, 40), (40, 40, 230))


def make_yolo_dataset(root: Path, train: int = 8, val: int = 4, size: int = 64, seed: int = 0) -> Path:
    """root/images/{train,val}/*.png, each with one red and one blue rectangle, their labels, and data.yaml."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            lines = []
            for class_id, colour in enumerate(COLOURS):
                w, h = rng.integers(12, 28, 2)
                x, y = rng.integers(0, size - w), rng.integers(0, size - h)
                image[y:y + h, x:x + w] = colour
                box = ((x + w / 2) / size, (y + h / 2) / size, w / size, h / size)
                lines.append(f"{class_id} " + " ".join(f"{v:.6f}" for v in box))
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(lines) + "\n")
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(CLASSES))
    (root / "data.yaml").write_text(f"train: images/train\nval: images/val\nnames:\n{names}")
    return root / "data.yaml"


def records_of(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def ultralytics_yolo(weights):
    """Ultralytics' own YOLO class, prepared by vqtool (offline, no stray files)."""
    from vqtool.detection.ultralytics_env import load_ultralytics

    return load_ultralytics().YOLO(str(weights))


def ultralytics_predict(weights, source, **args) -> list:
    from vqtool.detection.ultralytics_env import keeping_threads

    with keeping_threads():
        return list(ultralytics_yolo(weights).predict(str(source), stream=True, verbose=False, **args))


def ultralytics_val(weights, data, project):
    from vqtool.detection.ultralytics_env import keeping_threads

    with keeping_threads():
        return ultralytics_yolo(weights).val(data=str(data), project=str(project), verbose=False)


def assert_same_detections(records: list[dict], results: list, tolerance: float = 1e-3) -> int:
    """vqtool's records against Ultralytics' Results, image by image; returns how many boxes were compared."""
    assert [Path(r["path"]).name for r in records] == [Path(r.path).name for r in results]
    compared = 0
    for record, result in zip(records, results):
        detections = record["detections"]
        assert [d["class_id"] for d in detections] == result.boxes.cls.int().tolist(), record["path"]
        for d, conf, xyxy, xywhn in zip(detections, result.boxes.conf.tolist(), result.boxes.xyxy.tolist(),
                                        result.boxes.xywhn.tolist()):
            assert d["confidence"] == pytest.approx(conf, abs=tolerance)
            assert d["xyxy"] == pytest.approx(xyxy, abs=tolerance)
            assert d["xywhn"] == pytest.approx(xywhn, abs=tolerance)
            compared += 1
        assert (record["height"], record["width"]) == tuple(result.orig_shape)
    return compared


@pytest.fixture(scope="module", autouse=True)
def quick_and_isolated(tmp_path_factory):
    """Ultralytics' settings and fonts live in a temporary vqtool home; training skips Ultralytics' plots."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VQTOOL_HOME", str(tmp_path_factory.mktemp("vqtool-home")))
        patch.delenv("VQTOOL_WEIGHTS_DIR", raising=False)
        patch.setattr("vqtool.detection.train.PLOTS", False)
        yield


@pytest.fixture(scope="module")
def yolo_data(tmp_path_factory) -> Path:
    return make_yolo_dataset(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, yolo_data):
    """`vqtool train data.yaml` for one epoch at 64 px, run from an empty working folder."""
    from click.testing import CliRunner

    from vqtool.cli import cli

    work = tmp_path_factory.mktemp("work")
    run = tmp_path_factory.mktemp("runs") / "shapes"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        result = CliRunner().invoke(cli, ["train", str(yolo_data), "--epochs", "1", "--imgsz", "64",
                                          "--out", str(run), "--json", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run, json.loads(result.stdout), work


# --- training, evaluation, confusion --------------------------------------------------------------


def test_train_writes_vqtools_run_folder_with_ultralytics_inside(trained_run):
    run, summary, work = trained_run
    assert summary["model"] == "yolov8n.yaml" and summary["epochs"] == 1 and summary["best_epoch"] == 1
    assert {"precision", "recall", "map50", "map50_95", "checkpoint", "seconds"} <= summary.keys()
    for name in ("model.pt", "metrics.csv", "curves.png", "args.json", "ultralytics/weights/best.pt",
                 "ultralytics/results.csv", "ultralytics/args.yaml"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 1 and {"train_box_loss", "val_cls_loss", "map50_95", "lr"} <= rows[0].keys()
    assert list(work.iterdir()) == []  # no runs/ (or anything else) in the working folder


def test_the_checkpoints_ultralytics_wrote_pass_the_pickle_check(trained_run):
    """model.pt, best.pt and last.pt carry train args, dates and metrics: none is refused (vqtool.pickles)."""
    from vqtool.detection.weights import check_checkpoint

    run, _, _ = trained_run
    for name in ("model.pt", "ultralytics/weights/best.pt", "ultralytics/weights/last.pt"):
        check_checkpoint(run / name)


def test_eval_equals_ultralytics_val(run_cli, trained_run, yolo_data, tmp_path):
    run, _, _ = trained_run
    report = json.loads(run_cli("eval", run / "model.pt", yolo_data, "--json", "-q").stdout)
    assert report["split"] == "val" and report["images"] == 4 and report["instances"] == 8
    assert set(report["per_class"]) == set(CLASSES)  # every val image holds one box of each class
    assert all(m["images"] == 4 and m["instances"] == 4 for m in report["per_class"].values())
    metrics = ultralytics_val(run / "model.pt", yolo_data, tmp_path / "val")
    assert report["map50_95"] == pytest.approx(metrics.box.map, abs=1e-6)
    assert report["map50"] == pytest.approx(metrics.box.map50, abs=1e-6)
    assert report["precision"] == pytest.approx(metrics.box.mp, abs=1e-6)
    own = json.loads(run_cli("eval", run, "--json", "-q").stdout)  # the run folder records its data.yaml
    assert own["map50_95"] == report["map50_95"]
    table = run_cli("eval", run).stdout
    assert "mAP50-95" in table and "all" in table


def test_confusion_has_a_background_row_and_column(run_cli, trained_run, yolo_data):
    run, _, _ = trained_run
    report = json.loads(run_cli("confusion", run, yolo_data, "--json", "-q").stdout)
    assert report["classes"] == [*CLASSES, "background"]
    matrix = np.array(report["matrix"])
    assert matrix.shape == (3, 3) and matrix[:2].sum() == report["n"] == 8  # every label in one true row
    result = run_cli("confusion", run, yolo_data, "--examples", "x.png")
    assert result.exit_code == 2 and "for classifiers" in result.stderr


def test_finetune_freezes_the_backbone(run_cli, trained_run, yolo_data, tmp_path):
    import torch

    run, _, _ = trained_run
    result = run_cli("finetune", yolo_data, "--weights", run, "--freeze", "backbone", "--epochs", "1", "--imgsz",
                     "64", "--device", "cpu", "--out", tmp_path / "ft", "--json", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["freeze"] == 10 and summary["epochs"] == 1  # yolov8's backbone is its first 10 layers
    before = torch.load(run / "model.pt", weights_only=False)["model"].float().state_dict()
    after = torch.load(tmp_path / "ft" / "model.pt", weights_only=False)["model"].float().state_dict()
    learned = [k for k in before if "running" not in k and "num_batches" not in k]
    backbone = [k for k in learned if int(k.split(".")[1]) < 10]
    assert all(torch.allclose(before[k], after[k], atol=1e-3) for k in backbone)
    assert any(not torch.allclose(before[k], after[k], atol=1e-3) for k in learned if k not in backbone)


def test_options_that_do_not_apply_to_detectors_are_refused(run_cli, yolo_data):
    result = run_cli("train", yolo_data, "--label-smoothing", "0.1")
    assert result.exit_code == 2 and "--label-smoothing" in result.stderr
    result = run_cli("finetune", yolo_data, "--weights", "w.pt", "--head", "mlp")
    assert result.exit_code == 2 and "--head does not apply" in result.stderr
    result = run_cli("finetune", yolo_data)
    assert result.exit_code == 2 and "needs --weights" in result.stderr
    result = run_cli("train", yolo_data, "--model", "resnet18")
    assert result.exit_code == 2 and "model yaml" in result.stderr


def test_data_yaml_is_a_registered_detection_source(run_cli):
    rows = json.loads(run_cli("datasets", "--json").stdout)
    assert {"name": "yolo", "kind": "path", "task": "detection"}.items() <= next(
        r for r in rows if r["name"] == "yolo").items()


def test_resume_continues_an_interrupted_detector_run(run_cli, yolo_data, monkeypatch):
    from vqtool.detection.train import EpochRecorder

    epoch_done = EpochRecorder.epoch_done

    def interrupted_after_epoch_1(self, trainer):
        epoch_done(self, trainer)
        if trainer.epoch == 0:
            raise KeyboardInterrupt  # as Ctrl-C right after epoch 1 was saved

    monkeypatch.setattr(EpochRecorder, "epoch_done", interrupted_after_epoch_1)
    args = ("--epochs", "2", "--imgsz", "64", "-q", "--out", "run")
    interrupted = run_cli("train", yolo_data, *args)
    # where it stands and the exact command that continues it, as for a classifier
    assert interrupted.exit_code == 130
    assert interrupted.stderr.strip() == "Aborted: run holds epoch 1 of 2; continue with: vqtool train --resume run"
    monkeypatch.setattr(EpochRecorder, "epoch_done", epoch_done)
    summary = json.loads(run_cli("train", "--resume", "run", "--json", "-q").stdout)
    assert summary["epochs"] == 2 and len(list(csv.DictReader(open("run/metrics.csv")))) == 2


def test_a_detector_runs_args_json_records_its_task_and_replays_it(run_cli, trained_run, yolo_data, tmp_path,
                                                                    monkeypatch):
    """args.json names the task and the run's options: `train --config RUN/args.json` asks the detection task for the
    same detector (options typed beside it win), and --resume goes to the detection task even before Ultralytics
    made its folder. (What each would train is caught at the trainer; the slow test below trains it.)"""
    from vqtool.detection.train import DetectorTraining

    run, _, _ = trained_run
    recorded = json.loads((run / "args.json").read_text())["args"]
    assert recorded["task"] == "detection" and recorded["dataset"] == str(yolo_data)
    assert recorded["detection"] == {"model": "yolov8n.yaml", "epochs": 1, "seed": 0, "device": "auto", "imgsz": 64}
    asked = []
    monkeypatch.setattr("vqtool.detection.train.train_detector",
                        lambda spec, training, **options: asked.append((spec, training, options["model_name"])) or {})
    monkeypatch.setattr("vqtool.detection.train.resume_detector", lambda run_dir, **_: asked.append(run_dir) or {})
    for extra in ((), ("--epochs", "3", "--batch-size", "4")):
        result = run_cli("train", "--config", run / "args.json", *extra, "--json", "-q")
        assert result.exit_code == 0, result.output
    once = DetectorTraining(epochs=1, seed=0, device="auto", imgsz=64)
    assert asked == [(str(yolo_data), once, "yolov8n.yaml"),
                     (str(yolo_data), DetectorTraining(epochs=3, seed=0, device="auto", imgsz=64, batch_size=4),
                      "yolov8n.yaml")]
    started = tmp_path / "started"  # a run killed after args.json was written, before Ultralytics' first file
    started.mkdir()
    (started / "args.json").write_text((run / "args.json").read_text())
    assert run_cli("train", "--resume", started, "--json", "-q").exit_code == 0 and asked[-1] == str(started)


@pytest.mark.slow
def test_a_detector_run_replayed_from_its_args_json_trains_the_same_detector(run_cli, trained_run, tmp_path):
    run, summary, _ = trained_run
    again = json.loads(run_cli("train", "--config", run / "args.json", "--out", tmp_path / "again", "-q",
                               "--json").stdout)
    assert again["model"] == summary["model"] and again["epochs"] == 1
    assert (json.loads((tmp_path / "again" / "args.json").read_text())["args"] ==
            json.loads((run / "args.json").read_text())["args"])


# --- detect ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
def test_detect_equals_ultralytics_predict(run_cli, trained_run, yolo_data, batch):
    run, _, _ = trained_run
    images = yolo_data.parent / "images"
    records = records_of(run_cli("detect", images, "--weights", run / "model.pt", "--conf", "0.001", "--imgsz", "64",
                                 "--batch", batch, "--json", "-q"))
    results = ultralytics_predict(run / "model.pt", images / "train", conf=0.001, imgsz=64, batch=batch)
    results += ultralytics_predict(run / "model.pt", images / "val", conf=0.001, imgsz=64, batch=batch)
    assert len(records) == 12 and assert_same_detections(records, results) > 0
    record = records[0]
    assert set(record) == {"path", "width", "height", "detections"}
    assert set(record["detections"][0]) == {"class_id", "class_name", "confidence", "xyxy", "xywhn"}


def test_detect_reports_bad_inputs_and_keeps_going(run_cli, trained_run, yolo_data, tmp_path):
    run, _, _ = trained_run
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("hello")
    good = yolo_data.parent / "images" / "val" / "0.png"
    result = run_cli("detect", good, tmp_path / "broken.jpg", tmp_path / "notes.txt", tmp_path / "gone.png",
                     "--weights", run, "--imgsz", "64", "--conf", "0.001", "--format", "csv")
    assert result.exit_code == 1
    for name, reason in (("broken.jpg", "cannot read"), ("notes.txt", "not an image"), ("gone.png", "no such")):
        assert any(name in line and reason in line for line in result.stderr.splitlines()), name
    assert "3 inputs could not be read" in result.stderr and "1 image, 3 skipped" in result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and {r["path"] for r in rows} == {str(good)} and float(rows[0]["confidence"]) > 0


def test_detect_reads_stdin_globs_and_folders_recursively(run_cli, trained_run, yolo_data, tmp_path):
    run, _, _ = trained_run
    images = yolo_data.parent / "images"
    nested = tmp_path / "photos" / "deeper"
    nested.mkdir(parents=True)
    shutil.copy(images / "val" / "1.png", nested / "a.png")
    (nested / "readme.txt").write_text("not an image, and not named: ignored")
    stdin = f"{images / 'train' / '0.png'}\n\n{images / 'train' / '1.png'}\n"
    records = records_of(run_cli("detect", "-", str(images / "val" / "*.png"), tmp_path / "photos",
                                 "--weights", run, "--imgsz", "64", "--json", "-q", input=stdin))
    assert [Path(r["path"]).name for r in records] == ["0.png", "1.png", "0.png", "1.png", "2.png", "3.png", "a.png"]


def test_detect_table_and_class_filter(run_cli, trained_run, yolo_data):
    run, _, _ = trained_run
    images = yolo_data.parent / "images" / "val"
    def found(*classes):
        records = records_of(run_cli("detect", images, "-w", run, "--imgsz", "64", "--conf", "0.001", "--json",
                                     "-q", *classes))
        return sorted(d["class_name"] for r in records for d in r["detections"])

    everything = found()
    assert "red" in everything
    assert found("--classes", "red") == [c for c in everything if c == "red"] == found("--classes", "0")
    assert "red" not in found("--classes", "blue")
    table = run_cli("detect", images, "-w", run, "--imgsz", "64", "--format", "table")
    assert table.stdout.splitlines()[0].split()[:2] == ["class", "conf"] and "4 images" in table.stderr
    unknown = run_cli("detect", images, "-w", run, "--classes", "purple")
    assert unknown.exit_code == 2 and "no class 'purple'" in unknown.stderr


def test_detect_video_frames_with_stride(run_cli, trained_run, tmp_path):
    import cv2

    run, _, _ = trained_run
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    for i in range(7):
        frame = np.full((48, 64, 3), 20 * i, np.uint8)
        frame[10:30, 8 + 4 * i:30 + 4 * i] = COLOURS[0][::-1]
        writer.write(frame)
    writer.release()
    records = records_of(run_cli("detect", video, "-w", run, "--imgsz", "64", "--conf", "0.001",
                                 "--vid-stride", "3", "--json", "-q"))
    assert [r["frame"] for r in records] == [2, 5]
    assert_same_detections(records, ultralytics_predict(run / "model.pt", video, conf=0.001, imgsz=64, vid_stride=3))


def test_saved_labels_read_back_as_a_dataset(run_cli, trained_run, yolo_data, tmp_path):
    run, _, _ = trained_run
    images = yolo_data.parent / "images" / "val"
    result = run_cli("detect", images, "-w", run, "--imgsz", "64", "--conf", "0.002", "--json",
                     "--save-dir", tmp_path / "out", "--save-txt")
    records = records_of(result)
    assert all((tmp_path / "out" / f"{i}.png").is_file() for i in range(4))  # annotated images
    # where they went and how many, in one line; and each record names its files
    assert (f"--save-dir: 4 annotated images written into {tmp_path / 'out'} and 4 label files in "
            f"{tmp_path / 'out' / 'labels'}") in result.stderr
    assert {Path(r["saved_image"]).name for r in records} == {f"{i}.png" for i in range(4)}
    assert all(Path(r["saved_labels"]).is_file() for r in records)
    dataset = tmp_path / "pseudo"
    shutil.copytree(images, dataset / "images" / "val")
    shutil.copytree(tmp_path / "out" / "labels", dataset / "labels" / "val")
    (dataset / "data.yaml").write_text(f"train: images/val\nval: images/val\nnames: {list(CLASSES)}\n")
    report = json.loads(run_cli("eval", run, dataset / "data.yaml", "--json", "-q").stdout)
    assert report["instances"] == sum(len(r["detections"]) for r in records) > 0


def test_exported_onnx_gives_the_same_boxes(run_cli, trained_run, yolo_data, tmp_path):
    pytest.importorskip("onnxruntime")
    from vqtool.detection.ultralytics_env import keeping_threads

    run, _, _ = trained_run
    shutil.copy(run / "model.pt", tmp_path / "model.pt")  # the export lands beside the weights
    with keeping_threads():
        onnx = ultralytics_yolo(tmp_path / "model.pt").export(format="onnx", imgsz=64, simplify=False)
    images = yolo_data.parent / "images" / "val"
    args = ("--imgsz", "64", "--conf", "0.01", "--json", "-q")
    from_onnx = records_of(run_cli("detect", images, "-w", onnx, *args))
    from_pt = records_of(run_cli("detect", images, "-w", tmp_path / "model.pt", *args))
    assert [len(r["detections"]) for r in from_onnx] == [len(r["detections"]) for r in from_pt]
    for a, b in zip(from_onnx, from_pt):
        for x, y in zip(a["detections"], b["detections"]):
            assert x["class_id"] == y["class_id"] and x["xyxy"] == pytest.approx(y["xyxy"], abs=0.05)


# --- weights --------------------------------------------------------------------------------------


def test_bare_names_resolve_from_the_weights_folder(run_cli, trained_run, yolo_data, tmp_path, monkeypatch):
    run, _, _ = trained_run
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(run / "model.pt", folder / "yolov8n.pt")
    monkeypatch.setenv("VQTOOL_WEIGHTS_DIR", str(folder))
    image = yolo_data.parent / "images" / "val" / "0.png"
    assert len(records_of(run_cli("detect", image, "-w", "yolov8n.pt", "--imgsz", "64", "--json", "-q"))) == 1


def test_missing_official_weights_offline_fail_fast_saying_where_to_put_them(run_cli, yolo_data, tmp_path,
                                                                              monkeypatch):
    import socket

    def unreachable(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setenv("VQTOOL_WEIGHTS_DIR", str(tmp_path / "weights"))
    started = time.perf_counter()
    result = run_cli("detect", yolo_data.parent / "images", "-w", "yolo11n.pt")
    assert time.perf_counter() - started < 10
    assert result.exit_code == 1 and "network is unreachable" in result.stderr
    assert str(tmp_path / "weights") in result.stderr and "VQTOOL_WEIGHTS_DIR" in result.stderr
    for name, message in (("mymodel.pt", "not an official"), ("missing/dir/x.pt", "no such file")):
        result = run_cli("detect", yolo_data.parent / "images", "-w", name)
        assert result.exit_code == 2 and message in result.stderr
    (tmp_path / "notes.txt").write_text("hi")
    result = run_cli("detect", yolo_data.parent / "images", "-w", tmp_path / "notes.txt")
    assert result.exit_code == 2 and "not YOLO weights" in result.stderr


# --- offline by construction ----------------------------------------------------------------------

OFFLINE_SCRIPT = textwrap.dedent("""
    import json, socket, sys, time
    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(str(address))
        raise OSError("network disabled by the test")

    socket.getaddrinfo = refuse
    socket.create_connection = refuse
    socket.socket.connect = lambda self, address: refuse(address)
    socket.socket.connect_ex = lambda self, address: refuse(address)

    from click.testing import CliRunner
    from vqtool.cli import cli
    import vqtool.detection.train
    vqtool.detection.train.PLOTS = False  # as in the other tests: a few seconds faster

    report = {}
    for name, args in json.loads(sys.argv[1]).items():
        started = time.perf_counter()
        result = CliRunner().invoke(cli, args)
        report[name] = {"exit": result.exit_code, "seconds": time.perf_counter() - started,
                        "stderr": result.stderr[-500:], "attempts": list(attempts)}
        attempts.clear()
    print(json.dumps(report))
""")


def test_offline_run_neither_hangs_nor_touches_network_or_user_settings(trained_run, yolo_data, tmp_path):
    """A fresh process with no network and a fresh home: train, detect (with --save-dir, which draws labels
    and needs a font), eval and a weights download; nothing may try the network but that download, and no
    Ultralytics settings or runs/ folder may appear outside vqtool's own cache and the folders asked for."""
    run, _, _ = trained_run
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    commands = {
        "train": ["train", str(yolo_data), "--epochs", "1", "--imgsz", "64", "--out", str(tmp_path / "run"), "-q"],
        "detect": ["detect", str(yolo_data.parent / "images"), "-w", str(run), "--imgsz", "64", "--conf", "0.001",
                   "--save-dir", str(tmp_path / "annotated"), "-q"],
        "eval": ["eval", str(run), str(yolo_data), "--json", "-q"],
        "download": ["detect", str(yolo_data.parent / "images"), "-w", "yolo11n.pt"],
    }
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("YOLO_", "ULTRALYTICS_", "VQTOOL_", "XDG_", "PYTEST_"))}
    result = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, json.dumps(commands)], cwd=work,
                            env={**env, "HOME": str(home)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    for name in ("train", "detect", "eval"):
        assert report[name]["exit"] == 0, report[name]
        assert report[name]["attempts"] == [], report[name]  # Ultralytics never tried the network
    assert report["download"]["exit"] == 1 and "network is unreachable" in report["download"]["stderr"]
    assert report["download"]["seconds"] < 10 and report["download"]["attempts"]  # vqtool's one quick probe
    assert len(list((tmp_path / "annotated").rglob("*.png"))) == 12  # train/ and val/ kept
    assert list(work.iterdir()) == []  # no runs/ folder in the working directory
    assert not (home / ".config" / "Ultralytics").exists()
    settings = home / ".cache" / "vqtool" / "ultralytics" / "Ultralytics" / "settings.json"
    assert json.loads(settings.read_text())["sync"] is False



def fall_weights() -> Path:
    return Path(ASSETS) / "weights" / "yolov8-fall.pt"


def coco8_copy(tmp_path) -> Path:
    """coco8 in a temporary folder: Ultralytics writes label caches beside the labels."""
    shutil.copytree(Path(ASSETS) / "data" / "coco8", tmp_path / "coco8", copy_function=shutil.copyfile)
    return tmp_path / "coco8" / "coco8.yaml"


@requires_assets
@pytest.mark.assets
def test_fall_detector_on_real_photos_equals_ultralytics(run_cli, tmp_path):
    """coco8's images and cats_vs_dogs photos through vqtool detect and YOLO(w).predict, same settings."""
    photos = tmp_path / "photos"
    photos.mkdir()
    data = Path(ASSETS) / "data"
    files = sorted((data / "coco8" / "images").rglob("*.jpg"))
    for kind in ("cats", "dogs"):
        files += sorted((data / "cats_vs_dogs" / "val" / kind).glob("*.jpg"))[:6]
    for i, file in enumerate(files):
        (photos / f"{i:03d}_{file.name}").symlink_to(file)
    for args in ({}, {"conf": 0.1, "iou": 0.5, "imgsz": 480}):
        flags = [part for key, value in args.items() for part in (f"--{key}", value)]
        records = records_of(run_cli("detect", photos, "-w", fall_weights(), "--json", "-q", *flags))
        results = ultralytics_predict(fall_weights(), photos, **args)
        assert len(records) == len(files) and assert_same_detections(records, results) > 10


@requires_assets
@pytest.mark.assets
def test_fall_detector_eval_equals_model_val(run_cli, tmp_path):
    coco8 = coco8_copy(tmp_path)
    report = json.loads(run_cli("eval", fall_weights(), coco8, "--json", "-q").stdout)
    metrics = ultralytics_val(fall_weights(), coco8, tmp_path / "val")
    assert abs(report["map50_95"] - metrics.box.map) < 0.002 and abs(report["map50"] - metrics.box.map50) < 0.002


@requires_assets
@pytest.mark.assets
def test_train_on_coco8_offline(run_cli, tmp_path):
    coco8 = coco8_copy(tmp_path)
    result = run_cli("train", coco8, "--model", "yolov8n.yaml", "--epochs", "1", "--imgsz", "64", "--out", "run",
                     "--json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"] == 1 and Path("run/model.pt").is_file()
    assert sorted(os.listdir(".")) == ["coco8", "run"]  # the working folder is tmp_path


@requires_assets
@pytest.mark.assets
def test_finetune_the_fall_detector_on_a_tiny_dataset(yolo_data, tmp_path):
    from vqtool.detection.train import DetectorTraining, finetune_detector
    from vqtool.reporter import SILENT

    training = DetectorTraining(epochs=1, imgsz=64, device="cpu")
    summary = finetune_detector(str(yolo_data), str(fall_weights()), "backbone", training,
                                out_dir=str(tmp_path / "ft"), reporter=SILENT)
    assert summary["freeze"] == 10 and (tmp_path / "ft" / "model.pt").is_file()
    assert ultralytics_yolo(tmp_path / "ft" / "model.pt").names == dict(enumerate(CLASSES))
