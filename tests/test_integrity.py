"""Data integrity: nothing is written over what the user did not name as output, files follow the umask, and a run
folder reads as one epoch whatever instant it is killed (SIGKILL, SIGTERM, Ctrl-C), then resumes."""

import csv
import errno
import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import make_class_tree

RUN_FILES = ("model.safetensors", "model.json", "metrics.csv", "state.pt", "args.json", "curves.png")


def summary_of(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def one_error_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert text in result.stderr and "Traceback" not in result.output


def strict_json(path: Path):
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def epoch_of(run: Path):
    """The epoch a run folder holds, read as vqtool's readers read it; fails unless all its files agree."""
    from vqtool.classification.checkpoints.format import load_checkpoint, read_meta
    from vqtool.runs.commit import committed

    state_path = committed(run, "state.pt")
    if not state_path.is_file():
        assert not committed(run, "model.json").exists() and not committed(run, "metrics.csv").exists()
        return None
    state = torch.load(state_path, weights_only=True)
    rows = list(csv.DictReader(open(committed(run, "metrics.csv"))))
    assert [int(r["epoch"]) for r in rows] == list(range(1, state["epoch"] + 1)) == [r["epoch"] for r in
                                                                                      state["history"]]
    meta = read_meta(run)
    assert meta["metrics"]["best_epoch"] == state["best"]["epoch"]
    assert meta["metrics"]["val_top1"] == pytest.approx(state["best"]["val_top1"])
    weights = load_checkpoint(run).model.state_dict()
    assert all(torch.equal(weights[k], state["best_state"][k]) for k in weights)  # the best epoch's weights
    assert state.get("finished", False) == ("test_top1" in meta["metrics"])
    if state["epoch"] == state["planned_epochs"]:
        assert committed(run, "curves.png").is_file()  # a kill after the last epoch still leaves the curves
    strict_json(committed(run, "model.json"))
    return state["epoch"], state.get("finished", False)


def leftovers(run: Path) -> list[str]:
    return [p.name for p in Path(run).iterdir() if p.name.startswith(".")]


# --- a run folder is one epoch ----------------------------------------------------------------------


def test_a_run_killed_at_any_instant_reads_as_one_epoch_and_resumes(run_cli, tmp_path):
    """Each step of every commit is frozen in a copy of the run folder, as SIGKILL at that instant leaves it."""
    import vqtool.runs.commit as commit

    snapshots = []

    def freeze(run: Path, torn: Path | None = None) -> None:
        copy = tmp_path / "frozen" / f"{len(snapshots):03d}"
        shutil.copytree(run, copy)
        if torn is not None:  # killed while this file was being written
            half = copy / torn.relative_to(run)
            half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])
        snapshots.append(copy)

    def staging(path, save, _stage=commit._stage):
        freeze(path.parent.parent)
        _stage(path, save)
        freeze(path.parent.parent, torn=path)

    def switching(staged, commit_dir, _switch=commit._switch):
        freeze(commit_dir.parent)
        _switch(staged, commit_dir)
        freeze(commit_dir.parent)

    def installing(staged, destination, _install=commit._install):
        _install(staged, destination)
        freeze(destination.parent)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(commit, "_stage", staging)
        patch.setattr(commit, "_switch", switching)
        patch.setattr(commit, "_install", installing)
        straight = summary_of(run_cli("train", "--epochs", "3", "--json", "-q", "--out", "run"))
    seen = [epoch_of(snapshot) for snapshot in snapshots]
    assert set(seen) == {None, (1, False), (2, False), (3, False), (3, True)}
    assert epoch_of(Path("run")) == (3, True) and leftovers(Path("run")) == []
    for kind in ((2, False), (3, False)):  # killed mid-run, and after the last epoch before the final checkpoint
        interrupted = [s for s, epoch in zip(snapshots, seen) if epoch == kind and (s / ".commit").is_dir()][0]
        resumed = summary_of(run_cli("train", "--resume", interrupted, "--json", "-q"))
        assert resumed["epochs"] == 3 and resumed["val_top1"] == pytest.approx(straight["val_top1"], abs=1e-6)
        assert resumed["test_top1"] == pytest.approx(straight["test_top1"], abs=1e-6)
        assert epoch_of(interrupted) == (3, True) and leftovers(interrupted) == []
    torn = [s for s in snapshots if any(p.is_dir() for p in s.glob(".staging-*"))][-1]
    assert summary_of(run_cli("train", "--resume", torn, "--json", "-q"))["epochs"] == 3
    assert leftovers(torn) == []  # the killed writer's staging folder is gone


# os._exit()s at the Nth step of the commits (writing a staged file, the switch, installing a file)
DIE_AT_STEP = textwrap.dedent("""
    import atexit, os, sys
    import vqtool.runs.commit as commit

    steps, die_at = [0], int(os.environ["DIE_AT_STEP"])
    for name in ("_stage", "_switch", "_install"):
        def step(*args, _original=getattr(commit, name)):
            steps[0] += 1
            if steps[0] == die_at:
                os._exit(137)
            return _original(*args)
        setattr(commit, name, step)
    atexit.register(lambda: print(f"steps {steps[0]}", file=sys.stderr))  # when it lived to the end
    from vqtool.cli import main
    sys.argv[0] = "vqtool"
    main()
""")


def vqtool_process(*args, env=None, **popen):
    """``python -m vqtool ARGS`` (or the DIE_AT_STEP script), run from this test's folder with this checkout."""
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), **(env or {})}
    code = ["-c", DIE_AT_STEP] if "DIE_AT_STEP" in environment else ["-m", "vqtool"]
    return subprocess.Popen([sys.executable, *code, *map(str, args)], env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def killed_then_resumed(run_cli, run: Path, die_at: int) -> None:
    process = vqtool_process("train", "--epochs", "3", "--out", run, "-q", env={"DIE_AT_STEP": str(die_at)})
    _, stderr = process.communicate(timeout=300)
    if process.returncode == 0:  # the run has fewer steps than that
        assert int(stderr.split()[-1]) < die_at and epoch_of(run) == (3, True)
        return
    assert process.returncode == 137, stderr
    assert epoch_of(run) in (None, (1, False), (2, False), (3, False), (3, True))
    resumed = run_cli("train", "--resume", run, "--json", "-q")
    if epoch_of(run) is None:  # killed before its first commit: nothing to resume, and it says so
        assert resumed.exit_code == 1 and "no completed epoch" in resumed.stderr
        return
    assert resumed.exit_code in (0, 2), resumed.output  # 2: it had already finished
    assert epoch_of(run) == (3, True) and leftovers(run) == []


def test_sigkill_in_the_middle_of_a_commit_leaves_one_epoch_that_resumes(run_cli, tmp_path):
    killed_then_resumed(run_cli, tmp_path / "run", die_at=13)  # within epoch 2's commit


@pytest.mark.slow
@pytest.mark.parametrize("die_at", range(1, 38, 3))  # a 3-epoch digits run has 34 steps
def test_sigkill_at_every_step_of_the_commits(run_cli, tmp_path, die_at):
    killed_then_resumed(run_cli, tmp_path / "run", die_at)


@pytest.mark.slow
def test_sigkill_at_random_instants(run_cli, tmp_path):
    rng = random.Random(13)
    for attempt in range(8):
        run = tmp_path / f"run{attempt}"
        process = vqtool_process("train", "--epochs", "8", "--out", run, "-q")
        while not (run / "args.json").exists() and process.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 1.5))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        if epoch_of(run) is not None:
            assert run_cli("train", "--resume", run, "-q").exit_code in (0, 2)
            assert epoch_of(run) == (8, True) and leftovers(run) == []


@pytest.mark.slow  # over 30 s in the default suite (measured with --durations)
def test_sigterm_is_one_line_exit_143_and_the_run_resumes(run_cli, tmp_path):
    run = tmp_path / "run"
    process = vqtool_process("train", "--epochs", "12", "--out", run, "-q")
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    epoch, finished = epoch_of(run)
    assert stderr.strip() == (f"Terminated: {run} holds epoch {epoch} of 12 (curves.png drawn); continue with: "
                              f"vqtool train --resume {run}")  # one line
    assert 1 <= epoch < 12 and not finished
    assert summary_of(run_cli("train", "--resume", run, "--json", "-q"))["epochs"] == 12
    assert epoch_of(run) == (12, True) and leftovers(run) == []


def test_files_follow_the_umask(run_cli, tmp_path):
    previous = os.umask(0o027)
    try:
        summary_of(run_cli("train", "--epochs", "1", "--json", "-q", "--out", "run"))
    finally:
        os.umask(previous)
    modes = {name: stat.S_IMODE((Path("run") / name).stat().st_mode) for name in RUN_FILES}
    assert modes == dict.fromkeys(RUN_FILES, 0o640)


# --- training that cannot go on ---------------------------------------------------------------------


def test_a_val_loss_that_is_not_finite_is_divergence(run_cli, monkeypatch):
    import vqtool.classification.training.objective as objective

    validate, calls = objective.validate, []

    def nan_at_epoch_2(*args, **kwargs):
        calls.append(1)
        loss, top1, balanced = validate(*args, **kwargs)
        return (float("nan") if len(calls) == 2 else loss), top1, balanced

    monkeypatch.setattr(objective, "validate", nan_at_epoch_2)
    result = run_cli("train", "--epochs", "3", "--json", "-q", "--out", "run")
    one_error_line(result, 1, "training diverged at epoch 2: val loss is nan")
    assert epoch_of(Path("run")) == (1, False)  # the last good epoch, in strict JSON


def test_a_full_disk_while_training_is_one_line_and_keeps_the_last_epoch(run_cli, monkeypatch):
    import vqtool.classification.training.run as training_run

    save, calls = torch.save, []

    def disk_full_at_epoch_2(obj, path, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            Path(path).write_bytes(b"PK\x03\x04 half a zip")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, path, *args, **kwargs)

    monkeypatch.setattr(training_run.torch, "save", disk_full_at_epoch_2)
    result = run_cli("train", "--epochs", "3", "-q", "--out", "run")
    one_error_line(result, 1, "cannot save the epoch's files (No space left on device)")
    assert epoch_of(Path("run")) == (1, False) and leftovers(Path("run")) == []


def test_json_documents_never_hold_nan_or_infinity(tmp_path):
    from vqtool.runs.atomic_files import write_json

    write_json(tmp_path / "doc.json", {"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": -float("inf")}})
    assert strict_json(tmp_path / "doc.json") == {"a": None, "b": [None, 1.5], "c": {"d": None}}


def test_extending_a_finished_onecycle_run_trains_the_new_epochs(run_cli, class_tree):
    # 24 images, batch 64: one step per epoch, the case where a cycle of the extra epochs learned nothing
    args = ("--model", "cnn-bn", "--imgsz", "32", "-q", "--json")
    summary_of(run_cli("train", class_tree, "--epochs", "1", "--out", "run", *args))
    first = torch.load("run/state.pt", weights_only=True)["model"]
    for stray in (".model.json.k3j2.tmp", ".state.pt.4242.tmp", ".curves.png.77-a1b2c3.tmp.png", ".notes"):
        Path("run", stray).write_text("left by a killed writer, or (.notes) the user's own")
    result = run_cli("train", "--resume", "run", "--epochs", "3", "--json")
    assert leftovers(Path("run")) == [".notes"]
    assert result.exit_code == 0 and "a new onecycle schedule over epochs 2-3" in result.stderr
    rows = list(csv.DictReader(open("run/metrics.csv")))
    assert [float(r["lr"]) > 1e-4 for r in rows] == [True, True, False]  # peak 2e-3; the cycle ends low
    last = torch.load("run/state.pt", weights_only=True)["model"]
    assert max((last[k].float() - first[k].float()).abs().max() for k in first) > 1e-3  # the weights moved
    refused = run_cli("train", "--resume", "run", "--epochs", "2")
    one_error_line(refused, 2, "already trained 3 epochs")


# --- never overwrite ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cnn-bn run folder trained one epoch on the stripes."""
    from click.testing import CliRunner

    from vqtool.cli import cli

    root = tmp_path_factory.mktemp("integrity")
    data = make_class_tree(root / "stripes")
    result = CliRunner().invoke(cli, ["train", str(data), "--model", "cnn-bn", "--imgsz", "32", "--epochs", "1",
                                      "--out", str(root / "run"), "--json", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root / "run"


def test_export_never_replaces_a_file_unasked(run_cli, trained, tmp_path):
    pytest.importorskip("onnx")
    target = tmp_path / "mine.onnx"
    target.write_bytes(b"my own model")
    one_error_line(run_cli("export", trained, "-o", target, "--no-verify"), 2, "already exists; pass --overwrite")
    assert target.read_bytes() == b"my own model"
    summary_of(run_cli("export", trained, "-o", target, "--no-verify", "--overwrite", "--json", "-q"))
    assert target.read_bytes() != b"my own model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.onnx"]  # no temporary file left


def test_a_run_folder_s_own_files_are_never_export_targets(run_cli, trained, tmp_path):
    before = digests(trained)
    (tmp_path / "link.pt").symlink_to(trained / "state.pt")
    for target in (trained / "state.pt", trained / "model.pt", tmp_path / "link.pt"):
        result = run_cli("export", trained, "--format", "torchscript", "-o", target, "--overwrite", "--no-verify")
        one_error_line(result, 2, "is one of the files of the run folder")
    assert digests(trained) == before and not (trained / "model.pt").exists()


def test_the_default_export_path_is_not_replaced_either(run_cli, trained, tmp_path):
    pytest.importorskip("onnx")
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    summary_of(run_cli("export", run, "--no-verify", "--json", "-q"))
    first = digest(run / "model.onnx")
    one_error_line(run_cli("export", run, "--no-verify"), 2, "model.onnx already exists")
    assert digest(run / "model.onnx") == first


@pytest.fixture
def detector(tmp_path, monkeypatch) -> Path:
    """yolov8n.yaml with random weights saved as a .pt, in a temporary vqtool home (nothing is downloaded)."""
    from vqtool.detection.ultralytics_env import load_ultralytics

    monkeypatch.setenv("VQTOOL_HOME", str(tmp_path / "vqtool-home"))
    torch.manual_seed(0)
    weights = tmp_path / "weights" / "tiny.pt"
    weights.parent.mkdir()
    torch.save({"model": load_ultralytics().YOLO("yolov8n.yaml").model}, weights)
    return weights


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_class_tree(tmp_path / "photos", per_class=1, size=64, splits=("sub",))


def test_yolo_export_beside_its_weights_does_not_replace_a_file(run_cli, detector):
    existing = detector.with_suffix(".onnx")
    existing.write_bytes(b"an earlier export")
    one_error_line(run_cli("export", detector), 2, "tiny.onnx already exists")
    assert existing.read_bytes() == b"an earlier export"


@pytest.mark.parametrize("save_dir, sources, relation", [
    ("photos", ["photos"], "it is"),
    ("photos/annotated", ["photos"], "it lies inside"),
    ("photos", ["photos/sub"], "it contains"),
    ("photos/sub/horizontal", ["photos/sub/horizontal/horizontal_0.png"], "it is"),
    ("photos/sub/x", ["photos/**/*.png"], "it lies inside"),
])
def test_detect_refuses_a_save_dir_among_its_inputs(run_cli, detector, photos, save_dir, sources, relation):
    before = digests(photos)
    result = run_cli("detect", *sources, "-w", detector, "--save-dir", save_dir, "--save-txt", "--overwrite")
    one_error_line(result, 2, relation)
    assert digests(photos) == before


def test_detect_never_writes_over_an_input_read_from_stdin(run_cli, detector, photos):
    before = digests(photos)
    image = photos / "sub" / "vertical" / "vertical_0.png"
    result = run_cli("detect", "-", "-w", detector, "--save-dir", image.parent, "--overwrite", "--imgsz", "64",
                     input=f"{image}\n")
    one_error_line(result, 2, "is the input itself")
    assert digests(photos) == before


def test_detect_keeps_existing_labels_and_images_unless_told(run_cli, detector, photos, tmp_path):
    dataset = tmp_path / "dataset"
    (dataset / "labels").mkdir(parents=True)
    (dataset / "labels" / "horizontal_0.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # ground truth
    before = digests(dataset)
    source = photos / "sub" / "horizontal"
    args = ("detect", source, "-w", detector, "--imgsz", "64", "--save-dir", dataset, "--save-txt", "-q")
    one_error_line(run_cli(*args), 2, "horizontal_0.txt already exists")
    assert {k: v for k, v in digests(dataset).items() if k.startswith("labels")} == before
    assert run_cli(*args, "--overwrite").exit_code == 0
    assert digests(dataset)["labels/horizontal_0.txt"] != before["labels/horizontal_0.txt"]
    one_error_line(run_cli(*args, "--json"), 2, "horizontal_0.png already exists")


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   PermissionError(errno.EACCES, "Permission denied")])
def test_a_failed_save_leaves_no_partial_file(run_cli, detector, photos, tmp_path, monkeypatch, error):
    write_bytes = pathlib.Path.write_bytes

    def half_then_fail(self, data):
        write_bytes(self, data[: len(data) // 2])
        raise error

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_fail)
    out = tmp_path / "out"
    result = run_cli("detect", photos, "-w", detector, "--imgsz", "64", "--save-dir", out, "--save-txt", "-q")
    one_error_line(result, 1, error.strerror)
    assert [p for p in out.rglob("*") if p.is_file()] == []


# --- detector runs ----------------------------------------------------------------------------------


def test_a_detector_run_killed_after_its_last_epoch_resumes_on_its_own_data(run_cli, tmp_path, monkeypatch):
    """Killed before model.pt was written: resuming finishes it on the run's data.yaml, never a default dataset."""
    from test_detect import make_yolo_dataset
    from ultralytics.utils.torch_utils import strip_optimizer

    from vqtool.detection.train import EpochRecorder

    monkeypatch.setenv("VQTOOL_HOME", str(tmp_path / "vqtool-home"))
    monkeypatch.setattr("vqtool.detection.train.PLOTS", False)
    data = make_yolo_dataset(tmp_path / "shapes")
    epoch_done = EpochRecorder.epoch_done

    def killed_after_the_epoch(self, trainer):
        epoch_done(self, trainer)
        raise KeyboardInterrupt  # last.pt and metrics.csv are written; final validation and model.pt are not

    monkeypatch.setattr(EpochRecorder, "epoch_done", killed_after_the_epoch)
    assert run_cli("train", data, "--epochs", "1", "--imgsz", "64", "-q", "--out", "run").exit_code == 130
    monkeypatch.setattr(EpochRecorder, "epoch_done", epoch_done)
    assert not Path("run/model.pt").exists()
    resumed = run_cli("train", "--resume", "run", "--json")
    summary = summary_of(resumed)
    assert summary["epochs"] == 1 and summary["dataset"] == "data" and Path("run/model.pt").is_file()
    assert "training ended after epoch 1" in resumed.stderr and summary["map50_95"] >= 0
    Path("run/model.pt").unlink()  # killed after Ultralytics' final validation stripped last.pt
    strip_optimizer("run/ultralytics/weights/last.pt")
    assert summary_of(run_cli("train", "--resume", "run", "--json", "-q"))["epochs"] == 1
    assert Path("run/model.pt").is_file() and not list(tmp_path.rglob("coco8*"))


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    from vqtool.runs import folder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(folder.time, "strftime", lambda _: "20261202-120000")
    made = [folder.new_run_dir("train", None) for _ in range(3)]
    assert [path.name for path in made] == ["train-20261202-120000", "train-20261202-120000-2",
                                            "train-20261202-120000-3"]
    assert all(path.is_dir() for path in made)


# --- a detector run folder is one epoch too --------------------------------------------------------------

WEIGHTS = Path("ultralytics") / "weights"


def detector_epoch(run: Path) -> int | None:
    """The epoch a detector run folder holds, read as resume reads it; fails unless last.pt and metrics.csv
    agree (the checkpoint loads, and metrics.csv has one row per epoch it has trained)."""
    from vqtool.runs.commit import committed

    last, metrics = committed(run, str(WEIGHTS / "last.pt")), committed(run, "metrics.csv")
    if not last.is_file():
        assert not metrics.exists()
        return None
    checkpoint = torch.load(last, weights_only=False)  # our own test's file
    rows = list(csv.DictReader(open(metrics)))
    assert [int(float(row["epoch"])) for row in rows] == list(range(1, len(rows) + 1))
    if checkpoint.get("optimizer") is not None:  # stripped at the very end: then epoch is -1
        assert checkpoint["epoch"] + 1 == len(rows)
    assert committed(run, str(WEIGHTS / "best.pt")).is_file()
    torch.load(committed(run, str(WEIGHTS / "best.pt")), weights_only=False)
    return len(rows)


def test_a_detector_run_killed_at_any_instant_reads_as_one_epoch_and_resumes(run_cli, tmp_path, monkeypatch):
    """Every step of every commit, and Ultralytics' own checkpoint writes, frozen in a copy of the run folder
    (a file being written is torn in half), as SIGKILL at that instant leaves it; each copy reads as one epoch
    and a sample of them resumes to the end."""
    import vqtool.runs.commit as commit
    from test_detect import make_yolo_dataset

    monkeypatch.setenv("VQTOOL_HOME", str(tmp_path / "vqtool-home"))
    monkeypatch.setattr("vqtool.detection.train.PLOTS", False)
    data = make_yolo_dataset(tmp_path / "shapes")
    run, snapshots = tmp_path / "run", []

    def freeze(torn: Path | None = None) -> None:
        copy = tmp_path / "frozen" / f"{len(snapshots):03d}"
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.lock"))
        if torn is not None and torn.is_file():
            half = copy / torn.relative_to(run)
            half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])
        snapshots.append(copy)

    def staging(path, save, _stage=commit._stage):
        freeze()
        _stage(path, save)
        freeze(torn=path)

    def switching(staged, commit_dir, _switch=commit._switch):
        for written in staged.rglob("*.pt"):  # killed while Ultralytics wrote the epoch's checkpoints
            freeze(torn=written)
        _switch(staged, commit_dir)
        freeze()

    def installing(staged, destination, _install=commit._install):
        _install(staged, destination)
        freeze()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(commit, "_stage", staging)
        patch.setattr(commit, "_switch", switching)
        patch.setattr(commit, "_install", installing)
        straight = summary_of(run_cli("train", data, "--epochs", "2", "--imgsz", "64", "--json", "-q",
                                      "--out", run))
    assert straight["epochs"] == 2 and detector_epoch(run) == 2
    seen = [detector_epoch(snapshot) for snapshot in snapshots]
    assert set(seen) == {None, 1, 2}
    candidates = {  # killed mid-run after the switch, torn while staging, and after the last epoch's commit
        "switched": [s for s, epoch in zip(snapshots, seen) if epoch == 1 and (s / ".commit").is_dir()][0],
        "torn staging": [s for s, epoch in zip(snapshots, seen) if epoch == 1 and list(s.glob(".staging-*"))][-1],
        "last epoch": [s for s, epoch in zip(snapshots, seen) if epoch == 2][-1],
    }
    for name, snapshot in candidates.items():
        resumed = summary_of(run_cli("train", "--resume", snapshot, "--json", "-q"))
        assert resumed["epochs"] == 2 and detector_epoch(snapshot) == 2, name
        assert (snapshot / "model.pt").is_file() and not list(snapshot.glob(".*")), name


# Dies (os._exit) half-way through Ultralytics' Nth write of a checkpoint, as SIGKILL would leave it
DIE_IN_CHECKPOINT_WRITE = textwrap.dedent("""
    import os, pathlib, sys
    import torch

    writes, die_at = [0], int(os.environ["DIE_AT_WRITE"])
    write_bytes, save = pathlib.Path.write_bytes, torch.save

    def dying(path, data):
        if str(path).endswith(".pt"):
            writes[0] += 1
            if writes[0] == die_at:
                write_bytes(path, data[: len(data) // 2])
                os._exit(137)
        return write_bytes(path, data)

    def dying_save(obj, f, *args, **kwargs):  # the final strip of the optimizer
        if str(f).endswith(".pt") or ".pt" in os.path.basename(str(f)):
            writes[0] += 1
            if writes[0] == die_at:
                pathlib.Path(f).write_bytes(b"PK")
                os._exit(137)
        return save(obj, f, *args, **kwargs)

    pathlib.Path.write_bytes, torch.save = dying, dying_save
    from vqtool.cli import main
    sys.argv[0] = "vqtool"
    main()
""")


def killed_detector(tmp_path, die_at: int) -> Path:
    from test_detect import make_yolo_dataset

    data = tmp_path / "shapes" / "data.yaml"
    if not data.exists():
        make_yolo_dataset(tmp_path / "shapes")
    run = tmp_path / f"run-{die_at}"
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "DIE_AT_WRITE": str(die_at),
                   "VQTOOL_HOME": str(tmp_path / "vqtool-home")}
    process = subprocess.run([sys.executable, "-c", DIE_IN_CHECKPOINT_WRITE, "train", str(data), "--epochs", "2",
                              "--imgsz", "64", "-q", "--out", str(run)], env=environment, capture_output=True,
                             text=True, timeout=300)
    assert process.returncode == 137, process.stderr[-2000:]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("die_at", [3])  # epoch 2's last.pt (epoch 1 wrote last.pt and best.pt)
def test_a_detector_killed_while_ultralytics_writes_last_pt_keeps_its_epoch_and_resumes(run_cli, tmp_path, die_at,
                                                                                       monkeypatch):
    monkeypatch.setenv("VQTOOL_HOME", str(tmp_path / "vqtool-home"))
    run = killed_detector(tmp_path, die_at)
    assert detector_epoch(run) == 1  # the torn file was a staged one: last.pt is epoch 1's, whole
    assert summary_of(run_cli("train", "--resume", run, "--json", "-q"))["epochs"] == 2
    assert detector_epoch(run) == 2 and not list(run.glob(".*"))


@pytest.mark.slow
@pytest.mark.parametrize("die_at", [1, 2, 4, 5, 6])  # epoch 1's files, epoch 2's best.pt, the final strips
def test_a_detector_killed_in_any_checkpoint_write_keeps_one_epoch(run_cli, tmp_path, die_at, monkeypatch):
    monkeypatch.setenv("VQTOOL_HOME", str(tmp_path / "vqtool-home"))
    run = killed_detector(tmp_path, die_at)
    epoch = detector_epoch(run)
    resumed = run_cli("train", "--resume", run, "--json", "-q")
    if epoch is None:  # killed before its first commit: nothing to resume, and it says so
        assert resumed.exit_code == 2 and "no detector training to resume" in resumed.stderr
        return
    assert summary_of(resumed)["epochs"] == 2 and detector_epoch(run) == 2 and (run / "model.pt").is_file()


@pytest.mark.slow
def test_a_detector_sigkilled_at_random_instants_reads_as_one_epoch_and_resumes(run_cli, tmp_path, monkeypatch):
    from test_detect import make_yolo_dataset

    monkeypatch.setenv("VQTOOL_HOME", str(tmp_path / "vqtool-home"))
    data = make_yolo_dataset(tmp_path / "shapes")
    rng = random.Random(29)
    for attempt in range(4):
        run = tmp_path / f"run{attempt}"
        process = vqtool_process("train", data, "--epochs", "3", "--imgsz", "64", "--out", run, "-q",
                                 env={"VQTOOL_HOME": str(tmp_path / "vqtool-home")})
        while not (run / "metrics.csv").exists() and process.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 6))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        if detector_epoch(run) is not None:
            assert run_cli("train", "--resume", run, "-q").exit_code in (0, 2)
            assert detector_epoch(run) == 3 and (run / "model.pt").is_file()


@pytest.fixture
def interrupted_detector(run_cli, tmp_path, monkeypatch) -> Path:
    """A 2-epoch detector run stopped (Ctrl-C) after its first epoch's commit."""
    from test_detect import make_yolo_dataset
    from vqtool.detection.train import EpochRecorder

    monkeypatch.setenv("VQTOOL_HOME", str(tmp_path / "vqtool-home"))
    monkeypatch.setattr("vqtool.detection.train.PLOTS", False)
    data = make_yolo_dataset(tmp_path / "shapes")
    epoch_done = EpochRecorder.epoch_done

    def interrupted(self, trainer):
        epoch_done(self, trainer)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochRecorder, "epoch_done", interrupted)
        assert run_cli("train", data, "--epochs", "2", "--imgsz", "64", "-q", "--out", "run").exit_code == 130
    assert detector_epoch(Path("run")) == 1
    return Path("run")


def test_resuming_a_copied_detector_run_leaves_the_original_as_it_was(run_cli, interrupted_detector, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(interrupted_detector, copy)
    before = digests(interrupted_detector)
    assert summary_of(run_cli("train", "--resume", copy, "--json", "-q"))["epochs"] == 2
    assert digests(interrupted_detector) == before and detector_epoch(copy) == 2


def test_detector_resume_ignores_the_save_dir_its_checkpoint_names(run_cli, interrupted_detector, tmp_path):
    last = interrupted_detector / WEIGHTS / "last.pt"
    checkpoint = torch.load(last, weights_only=False)
    checkpoint["train_args"]["save_dir"] = str(tmp_path / "elsewhere")
    torch.save(checkpoint, last)
    assert summary_of(run_cli("train", "--resume", interrupted_detector, "--json", "-q"))["epochs"] == 2
    assert not (tmp_path / "elsewhere").exists() and detector_epoch(interrupted_detector) == 2


@pytest.mark.parametrize("link", [".commit", "ultralytics/weights"])
def test_detector_resume_takes_in_no_file_through_a_link(run_cli, interrupted_detector, tmp_path, link):
    other = tmp_path / "other"
    shutil.copytree(interrupted_detector / WEIGHTS, other)
    (other / "metrics.csv").write_text("epoch\n1\n2\n3\n")
    before = digests(other)
    if link == ".commit":
        (interrupted_detector / link).symlink_to(other)
    else:
        shutil.rmtree(interrupted_detector / link)
        (interrupted_detector / link).symlink_to(other)
    result = run_cli("train", "--resume", interrupted_detector, "-q")
    one_error_line(result, 1, "link")
    assert digests(other) == before and (interrupted_detector / "metrics.csv").read_text().count("\n") == 2


# --- every output a command writes follows one rule: --overwrite to replace, never a run's own file -------------


def test_confusion_pngs_replace_nothing_unasked(run_cli, trained, tmp_path):
    image = next((tmp_path.parent / "integrity0" / "stripes").rglob("*.png"), None) or trained / "curves.png"
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"my own figure")
    before = digests(trained)
    for option in ("--png", "--examples"):
        for target in (mine, trained / "curves.png"):
            result = run_cli("confusion", trained, option, target)
            assert result.exit_code == 2 and "Traceback" not in result.output, result.output
            assert ("already exists; pass --overwrite" if target == mine else "is one of the files of the run "
                    "folder") in result.stderr
        one_error_line(run_cli("confusion", trained, option, trained / "curves.png", "--overwrite"), 2,
                       "is one of the files of the run folder")
    assert mine.read_bytes() == b"my own figure" and digests(trained) == before and image.is_file()
    summary_of(run_cli("confusion", trained, "--png", mine, "--overwrite", "--json", "-q"))
    assert mine.read_bytes().startswith(b"\x89PNG")


def test_runs_compare_png_replaces_nothing_unasked(run_cli, trained, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"mine")
    one_error_line(run_cli("runs", "compare", trained, other, "--png", mine), 2, "already exists; pass --overwrite")
    one_error_line(run_cli("runs", "compare", trained, other, "--png", other / "curves.png", "--overwrite"), 2,
                   "is one of the files of the run folder")
    assert mine.read_bytes() == b"mine"
    assert run_cli("runs", "compare", trained, other, "--png", mine, "--overwrite", "-q").exit_code == 0
    assert mine.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("command", [["conv", "apply", "--demo", "square", "--kernel", "sobel-x"],
                                     ["conv", "filters", "smallcnn"]], ids=["conv apply", "conv filters"])
def test_conv_outputs_replace_same_named_files_only_with_overwrite(run_cli, tmp_path, command):
    first = run_cli(*command, "--out", "maps", "--json")
    files = [Path(name) for name in json.loads(first.stdout)["files"]]
    for path in files:
        path.write_bytes(b"mine")
    one_error_line(run_cli(*command, "--out", "maps", "-q"), 2, "already exists")
    assert all(path.read_bytes() == b"mine" for path in files)
    assert run_cli(*command, "--out", "maps", "--overwrite", "-q").exit_code == 0
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in files)


def test_conv_never_writes_into_a_run_folder(run_cli, trained):
    before = digests(trained)
    one_error_line(run_cli("conv", "apply", "--demo", "square", "--out", trained, "--overwrite"), 2, "a run folder")
    assert digests(trained) == before


def test_export_never_replaces_a_detector_run_s_own_checkpoint(run_cli, detector, tmp_path):
    run = tmp_path / "run"
    (run / "ultralytics" / "weights").mkdir(parents=True)
    (run / "args.json").write_text('{"command": "train", "args": {}}')
    for name in ("best.pt", "last.pt", "best.onnx"):
        shutil.copyfile(detector, run / "ultralytics" / "weights" / name)
    before = digests(run)
    for target in ("ultralytics/weights/best.pt", "ultralytics/weights/last.pt", "ultralytics/weights/best.onnx"):
        result = run_cli("export", detector, "-o", run / target, "--overwrite", "--no-verify")
        one_error_line(result, 2, "is one of the files of the run folder")
    assert digests(run) == before


def test_runs_lists_each_run_once_however_many_links_lead_to_it(run_cli, trained, tmp_path):
    runs = tmp_path / "runs"
    (runs / "group").mkdir(parents=True)
    shutil.copytree(trained, runs / "group" / "one")
    (runs / "group" / "loop").symlink_to("..")  # a link to a parent: a walk that follows it never ends
    (runs / "group" / "self").symlink_to("self")  # a link to itself
    (runs / "again").symlink_to(runs / "group" / "one")
    rows = json.loads(run_cli("runs", "list", runs, "--json").stdout)
    assert len(rows) == 1


@pytest.mark.parametrize("plant", ["ultralytics is a link", "a staged file is a link", ".commit is a link"])
def test_an_interrupted_commit_is_never_installed_through_or_from_a_link(tmp_path, plant):
    from vqtool.errors import VQError
    from vqtool.runs.commit import recover

    run, other = tmp_path / "run", tmp_path / "other"
    (other / "weights").mkdir(parents=True)
    (other / "weights" / "last.pt").write_text("theirs")
    (other / "metrics.csv").write_text("theirs")
    staged = run / ".commit" / "ultralytics" / "weights"
    staged.mkdir(parents=True)
    (run / "args.json").write_text("{}")
    (staged / "last.pt").write_text("ours")
    if plant == "ultralytics is a link":
        (run / "ultralytics").symlink_to(other)
    elif plant == "a staged file is a link":
        (run / ".commit" / "metrics.csv").symlink_to(other / "metrics.csv")
    else:
        shutil.rmtree(run / ".commit")
        (run / ".commit").symlink_to(other)
    with pytest.raises(VQError, match="link"):
        recover(run)
    assert (other / "weights" / "last.pt").read_text() == "theirs" and (other / "metrics.csv").read_text() == "theirs"
    assert not (run / "metrics.csv").exists()
