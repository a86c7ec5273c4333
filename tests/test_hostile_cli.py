"""Hostile and unusual inputs, command-line side (issue 14): option values, outputs, streams, full disks.

Each case builds its inputs in tmp_path and checks the exit code, exactly one
``Error:`` line saying what is wrong, no traceback, and nothing left behind.
Usage errors that need no data must come before torch is imported, which the
subprocess tests check. Full and read-only filesystems are small tmpfs mounts,
made where the tests run as root (skipped with the reason otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import make_class_tree

ROOT = Path(__file__).resolve().parents[1]
QUICK = ("--model", "cnn-bn", "--imgsz", "32", "--epochs", "1", "-q")


@dataclass
class Case:
    id: str
    build: Callable[[Path], list]  # makes the inputs in tmp_path, returns the command line
    exit_code: int
    says: tuple[str, ...]  # each in the one Error line
    absent: tuple[str, ...] = ()  # must not exist afterwards (relative to tmp_path)
    lacks: tuple[str, ...] = ()  # must not be in the Error line (misleading advice)


def argv(*args) -> Callable[[Path], list]:
    return lambda folder: list(args)


def with_file(name: str, *args) -> Callable[[Path], list]:
    """The command line after creating the regular file ``name``."""
    def build(folder: Path) -> list:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
        return list(args)
    return build


def with_dangling_link(*args) -> Callable[[Path], list]:
    def build(folder: Path) -> list:
        if not (folder / "link").is_symlink():
            (folder / "link").symlink_to(folder / "nowhere")
        return list(args)
    return build


def with_run_folder(*args) -> Callable[[Path], list]:
    def build(folder: Path) -> list:
        (folder / "old").mkdir(exist_ok=True)
        (folder / "old" / "args.json").write_text('{"command": "train", "args": {}}')
        return list(args)
    return build


def with_interrupted_finetune(*args) -> Callable[[Path], list]:
    """A finetune run folder (its args.json; no epoch done) whose options unfreeze at epoch 4."""
    def build(folder: Path) -> list:
        (folder / "tuned").mkdir(exist_ok=True)
        (folder / "tuned" / "args.json").write_text(json.dumps({"command": "finetune", "args": {
            "dataset": "digits", "config": {"epochs": 5}, "finetune": {"unfreeze_at": 4}}}))
        return list(args)
    return build


NOT_FINITE = "is not a finite number"

USAGE_CASES = [
    Case("an unknown option of vqtool itself", argv("--bogus"), 2, ("No such option", "--bogus", "--help")),
    Case("--lr nan", argv("train", "--lr", "nan"), 2, ("--lr", NOT_FINITE)),
    Case("--lr inf", argv("train", "--lr", "inf"), 2, ("--lr", NOT_FINITE)),
    Case("--weight-decay inf", argv("train", "--weight-decay", "inf"), 2, ("--weight-decay", NOT_FINITE)),
    Case("--label-smoothing nan", argv("train", "--label-smoothing", "nan"), 2, (NOT_FINITE,)),
    Case("--val-split nan", argv("train", "--val-split", "nan"), 2, ("--val-split", NOT_FINITE)),
    Case("finetune --backbone-lr -inf", argv("finetune", "--backbone-lr", "-inf"), 2, (NOT_FINITE,)),
    Case("detect --conf nan", argv("detect", "x.jpg", "-w", "y.pt", "--conf", "nan"), 2, ("--conf", NOT_FINITE)),
    Case("detect --iou nan", argv("detect", "x.jpg", "-w", "y.pt", "--iou", "nan"), 2, ("--iou", NOT_FINITE)),
    Case("export --tolerance inf", argv("export", "run", "--tolerance", "inf"), 2, (NOT_FINITE,)),
    Case("--out ''", argv("train", "--out", ""), 2, ("--out", "an empty path")),
    Case("--out under a regular file", with_file("plain", "train", "--out", "plain/run"), 2,
         ("plain is a file, not a folder",)),
    Case("--out a regular file", with_file("plain", "train", "--out", "plain"), 2, ("exists and is not a folder",),
         lacks=("--resume",)),
    Case("--out /dev/null", argv("train", "--out", "/dev/null"), 2, ("exists and is not a folder",),
         lacks=("--resume",)),
    Case("--out a dangling symlink", with_dangling_link("train", "--out", "link"), 2,
         ("a symbolic link to", "which does not exist")),
    Case("--out an existing folder with files", with_file("taken/f", "train", "--out", "taken"), 2,
         ("already exists and holds files",), lacks=("--resume",)),
    Case("--out an existing run", with_run_folder("train", "--out", "old"), 2, ("already holds a run", "--resume old")),
    Case("--save-dir under a file", with_file("plain", "detect", "x.jpg", "-w", "y.pt", "--save-dir", "plain/d"), 2,
         ("plain is a file, not a folder",)),
    Case("confusion --png on a dangling link", with_dangling_link("confusion", "run", "--png", "link"), 2,
         ("--png", "which does not exist")),
    Case("export -o under a file", with_file("plain", "export", "run", "-o", "plain/m.onnx"), 2,
         ("plain is a file, not a folder",)),
    Case("conv apply --out under a file", with_file("plain", "conv", "apply", "--out", "plain/maps"), 2,
         ("plain is a file, not a folder",)),
    Case("finetune --unfreeze-at after the last epoch", argv("finetune", "--unfreeze-at", "9", "--epochs", "2"), 2,
         ("--unfreeze-at 9", "up to --epochs 2")),
    Case("finetune --unfreeze-at with nothing frozen", argv("finetune", "--unfreeze-at", "2", "--freeze", "none"), 2,
         ("needs something frozen first",)),
    Case("export --opset of a TorchScript export", argv("export", "run", "--format", "torchscript", "--opset", "12"),
         2, ("--opset applies to ONNX exports",)),
    Case("export --static of a TorchScript export", argv("export", "run", "--format", "torchscript", "--static"),
         2, ("--static applies to ONNX exports",)),
    Case("eval of a missing path", argv("eval", "missing"), 2, ("missing: no such file or folder",)),
    Case("confusion of a missing path", argv("confusion", "missing"), 2, ("missing: no such file or folder",)),
    Case("export of a missing path", argv("export", "missing"), 2, ("missing: no such file or folder",)),
    Case("--resume of a folder that is no run", argv("train", "--resume", "."), 2, ("not a vqtool run folder",)),
    Case("--resume with --epochs before the run's --unfreeze-at",
         with_interrupted_finetune("finetune", "--resume", "tuned", "--epochs", "3"), 2,
         ("--unfreeze-at 4", "up to --epochs 3")),
    Case("an unknown dataset", argv("train", "no-such-data"), 2, ("no dataset or path named 'no-such-data'",)),
    Case("an unknown subcommand", argv("trian"), 2, ("No such command 'trian'",)),
]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def check(case: Case, code: int, stderr: str, folder: Path) -> None:
    assert code == case.exit_code, stderr
    assert "Traceback" not in stderr
    errors = error_lines(stderr)
    assert len(errors) == 1 and stderr.strip() == errors[0], stderr  # one line, and only that line
    assert all(fragment in errors[0] for fragment in case.says), errors[0]
    assert not any(fragment in errors[0] for fragment in case.lacks), errors[0]
    for path in case.absent:
        assert not (folder / path).exists(), path


@pytest.mark.parametrize("case", USAGE_CASES, ids=lambda case: case.id)
def test_usage_error(case, run_cli, tmp_path):
    (tmp_path / "run").mkdir()  # a folder that is no checkpoint, for the export/confusion cases
    result = run_cli(*case.build(tmp_path))
    check(case, result.exit_code, result.stderr, tmp_path)


def test_usage_errors_come_before_torch_is_imported(tmp_path):
    """Every usage case above, in one fresh interpreter: none of them imports torch."""
    (tmp_path / "run").mkdir()
    commands = [case.build(tmp_path) for case in USAGE_CASES]
    code = f"""
import json, sys
from click.testing import CliRunner
from vqtool.cli import cli
codes = [CliRunner().invoke(cli, command).exit_code for command in {commands!r}]
print(json.dumps({{"codes": codes, "torch": "torch" in sys.modules}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    outcome = json.loads(result.stdout)
    assert outcome["codes"] == [case.exit_code for case in USAGE_CASES]
    assert outcome["torch"] is False


def test_debug_shows_the_traceback_and_keeps_the_exit_code(run_cli):
    result = run_cli("--debug", "train", "--lr", "nan")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("Error: ")


# --- stdout that goes away or fills up ------------------------------------------------------------


def shell(command: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True,
                          cwd=tmp_path, env=env)


VQTOOL = f"{sys.executable} -m vqtool"


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path):
    result = shell(f"{VQTOOL} models | head -1", tmp_path)  # a listing far longer than a pipe's buffer
    assert result.returncode == 0, result.stderr
    assert "Error" not in result.stderr and "Traceback" not in result.stderr and "Exception" not in result.stderr
    assert result.stdout.count("\n") == 1


def test_a_full_stdout_is_one_line(tmp_path):
    result = shell(f"{VQTOOL} datasets > /dev/full", tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: cannot write the results to stdout (No space left on device)"


def test_a_closed_stdout_is_no_crash(tmp_path):
    result = shell(f"{VQTOOL} conv shape --input 32 --kernel 3 >&-", tmp_path)
    assert result.returncode == 0 and result.stderr == ""


# --- full and read-only filesystems --------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


def mount_tmpfs(folder: Path, *options: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=1m", *options)), "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    return folder


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB filesystem with 8 KiB left."""
    folder = mount_tmpfs(tmp_path / "full")
    (folder / "filler").write_bytes(b"\0" * (1016 << 10))
    yield folder
    subprocess.run(["umount", "-l", str(folder)])


@pytest.fixture
def read_only(tmp_path):
    folder = mount_tmpfs(tmp_path / "ro", "ro")
    yield folder
    subprocess.run(["umount", "-l", str(folder)])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-epoch cnn-bn run folder to export and evaluate."""
    from click.testing import CliRunner

    from vqtool.cli import cli

    folder = tmp_path_factory.mktemp("trained")
    data = make_class_tree(folder / "data", per_class=6, size=16)
    result = CliRunner().invoke(cli, ["train", str(data), *QUICK, "--out", str(folder / "run")])
    assert result.exit_code == 0, result.output
    return folder / "run"


def leftovers(folder: Path) -> list[str]:
    """Files a failed write must not leave: temporary files and truncated outputs."""
    return [str(path.relative_to(folder)) for path in folder.rglob("*")
            if path.name != "filler" and (".tmp" in path.name or path.is_file() and path.stat().st_size == 0)]


@needs_root
@pytest.mark.parametrize("command, written", [
    (lambda run, full: ["export", run, "--format", "torchscript", "-o", full / "m.ts", "--no-verify"], "m.ts"),
    (lambda run, full: ["export", run, "--format", "onnx", "-o", full / "m.onnx", "--no-verify"], "m.onnx"),
    (lambda run, full: ["confusion", run, "--png", full / "cm.png", "-q"], "cm.png"),
    (lambda run, full: ["conv", "apply", "--out", full / "maps", "-q"], None),
], ids=["export torchscript", "export onnx", "confusion --png", "conv apply PNGs"])
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(command, written, run_cli, trained_run, full_disk):
    result = run_cli(*command(trained_run, full_disk))
    assert result.exit_code == 1, result.output
    assert error_lines(result.stderr) == result.stderr.strip().splitlines()[-1:]
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert "cannot be exported" not in result.stderr  # the disk is full, the model is fine
    assert leftovers(full_disk) == []
    assert written is None or not (full_disk / written).exists()


@needs_root
def test_training_onto_a_full_disk_is_one_line(run_cli, tmp_path, full_disk):
    data = make_class_tree(tmp_path / "data", per_class=6, size=16)
    result = run_cli("train", data, *QUICK, "--out", full_disk / "run")
    assert result.exit_code == 1
    assert error_lines(result.stderr) == [f"Error: {full_disk / 'run'}: cannot save the epoch's files (No space left "
                                          f"on device); the run folder holds no epoch yet"]
    assert leftovers(full_disk) == []


@needs_root
def test_an_lr_range_test_onto_a_full_disk_is_one_line(run_cli, tmp_path, full_disk):
    data = make_class_tree(tmp_path / "data", per_class=6, size=16)
    result = run_cli("train", data, "--model", "cnn-bn", "--imgsz", "32", "--lr-find", "-q", "--out", full_disk / "lr")
    assert result.exit_code == 1, result.output
    assert "No space left on device" in error_lines(result.stderr)[0]
    assert leftovers(full_disk) == []


@needs_root
@pytest.mark.parametrize("command", [
    lambda ro: ["train", "--out", ro / "run"],
    lambda ro: ["confusion", "run", "--png", ro / "cm.png"],
    lambda ro: ["detect", "x.jpg", "-w", "y.pt", "--save-dir", ro / "annotated"],
    lambda ro: ["export", "run", "-o", ro / "m.onnx"],
], ids=["train --out", "confusion --png", "detect --save-dir", "export -o"])
def test_an_output_on_a_read_only_filesystem_is_refused_first(command, run_cli, read_only):
    result = run_cli(*command(read_only))
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert f"{read_only} is on a read-only filesystem" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into folders without write permission")
def test_an_output_without_permission_is_refused_first(run_cli, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = run_cli("train", "--out", locked / "run")
    assert result.exit_code == 2 and f"no permission to write in {locked}" in result.stderr


@pytest.mark.parametrize("weights", ["run", "run/model.safetensors", "run/model.json", "model.onnx"])
def test_detect_given_a_classifier_says_so_in_one_line(weights, run_cli, trained_run, tmp_path):
    if weights == "model.onnx":
        assert run_cli("export", trained_run, "-o", tmp_path / weights, "--no-verify", "-q").exit_code == 0
        path = tmp_path / weights
    else:
        path = trained_run.parent / weights
    (tmp_path / "x.png").write_bytes(b"")
    result = run_cli("detect", tmp_path / "x.png", "-w", path)
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert "classifier" in result.stderr and "not a detector" in result.stderr and "vqtool predict" in result.stderr


@pytest.mark.parametrize("key, value, shown", [
    ("seconds", 42.61, "42.6 s"), ("seconds", 0.5, "0.50 s"), ("images_per_second", 5.1234, "5.1 img/s"),
    ("head_images_per_second", 10696.2, "10,696.2 img/s"), ("size_mb", 1.6100, "1.61 MB"),
    ("suggested_lr", 0.0016, "1.60e-03"), ("val_top1", 0.98601, "0.9860"), ("epochs", 10, "10"),
    ("seconds", float("nan"), "nan"), ("overfitting", False, "no"),
])
def test_summary_numbers_are_formatted_for_reading(key, value, shown):
    from vqtool.commands.output import format_field

    assert format_field(key, value) == shown


def test_the_training_summary_table_shows_figures_with_their_units(run_cli, tmp_path):
    import re

    result = run_cli("train", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert re.search(r"seconds\s+│\s+[\d.]+ s\b", result.stdout), result.stdout
    assert re.search(r"images_per_second\s+│\s+[\d,.]+ img/s", result.stdout), result.stdout


# --- issue 29: inputs that would block or never end ------------------------------------------------------


def vqtool_within(tmp_path: Path, *args, seconds: int = 120, env=None) -> subprocess.CompletedProcess:
    """vqtool ARGS in a subprocess that must end within ``seconds`` (a hang fails the test, it does not block it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VQTOOL_CACHE_DIR": str(tmp_path / "store"), **(env or {})}
    try:
        return subprocess.run([sys.executable, "-m", "vqtool", *map(str, args)], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=seconds, input="")  # stdin: a pipe nobody closes early
    except subprocess.TimeoutExpired:
        pytest.fail(f"vqtool {' '.join(map(str, args))} still ran after {seconds} s")


def fifo_in_a_list(folder: Path) -> list:
    data = make_class_tree(folder / "data", per_class=4, size=16, splits=())
    os.mkfifo(data / "vertical" / "pipe.png")  # in the tree and in the list: nobody ever writes to it
    rows = [f"data/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(data.rglob("*.png"))]
    (folder / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return ["train", folder / "list.csv", *QUICK, "--out", "run"]


def fifo_in_a_tree(folder: Path) -> list:
    data = make_class_tree(folder / "data", per_class=4, size=16, splits=())
    os.mkfifo(data / "vertical" / "pipe.png")
    return ["train", data, *QUICK, "--out", "run"]


def fifo_in_a_detection_dataset(folder: Path) -> list:
    from test_detect import make_yolo_dataset

    data = make_yolo_dataset(folder / "shapes", train=4, val=2)
    os.mkfifo(folder / "shapes" / "images" / "train" / "pipe.png")  # Ultralytics itself would wait on it
    return ["train", data, "--epochs", "1", "--imgsz", "64", "-q", "--out", "run"]


def class_weights_of(path: str):
    def build(folder: Path) -> list:
        return ["train", make_class_tree(folder / "data", per_class=4, size=16), "--class-weights", path, *QUICK]
    return build


@pytest.mark.parametrize("build, code, says", [
    (fifo_in_a_list, 0, "pipe.png (not a regular file (a FIFO))"),
    (fifo_in_a_tree, 0, ""),  # listing a tree takes regular files (and links) only: it never comes up
    (fifo_in_a_detection_dataset, 1, "are not regular files (a FIFO or device would block Ultralytics)"),
    (class_weights_of("/dev/zero"), 2, "--class-weights /dev/zero: not 'auto' or a readable JSON file (not a "
                                       "regular file (a character device))"),
    (class_weights_of("/dev/stdin"), 2, "not a regular file"),
], ids=["a FIFO named in a CSV", "a FIFO in a class folder", "a FIFO in a detection dataset",
        "--class-weights /dev/zero", "--class-weights /dev/stdin"])
def test_inputs_that_never_end_are_refused_not_waited_for(tmp_path, build, code, says):
    result = vqtool_within(tmp_path, *build(tmp_path), env={"VQTOOL_HOME": str(tmp_path / "home")})
    assert result.returncode == code, result.stderr[-2000:]
    assert says in result.stderr and "Traceback" not in result.stderr


@needs_root
def test_a_store_on_a_full_disk_is_one_line(tmp_path, full_disk):
    data = make_class_tree(tmp_path / "data", per_class=40, size=64)
    result = subprocess.run([sys.executable, "-m", "vqtool", "train", str(data), *QUICK, "--imgsz", "64"],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "VQTOOL_CACHE_DIR": str(full_disk / "c")})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert error_lines(result.stderr) == result.stderr.strip().splitlines()[-1:]
    assert "--no-cache-store" in result.stderr


@needs_root
def test_a_store_on_a_read_only_filesystem_is_one_line(run_cli, tmp_path, read_only, monkeypatch):
    monkeypatch.setenv("VQTOOL_CACHE_DIR", str(read_only / "cache"))
    result = run_cli("train", make_class_tree(tmp_path / "data", per_class=4, size=16), *QUICK)
    assert result.exit_code == 1 and error_lines(result.stderr) == result.stderr.strip().splitlines()[-1:]
    assert "VQTOOL_CACHE_DIR=" in result.stderr and "Read-only file system" in result.stderr


def test_an_unexpected_os_error_anywhere_is_one_line(run_cli, tmp_path, monkeypatch):
    """The CLI's last resort: a failed system call the library did not turn into its own message."""
    def refused(folders):
        raise PermissionError(13, "Permission denied", str(tmp_path / "runs"))

    monkeypatch.setattr("vqtool.runs.summaries.find_runs", refused)
    result = run_cli("runs", "list")
    assert result.exit_code == 1 and result.stderr == f"Error: {tmp_path / 'runs'}: Permission denied\n"


def test_help_and_suggestions_say_what_applies(run_cli):
    """predict's --device is about running the model, not training detectors on several GPUs; an unknown option
    gets only options spelled like it (`--bogus` used to get `--log, --out`)."""
    predict_help = run_cli("predict", "--help").stdout
    assert "several GPUs" not in predict_help and "Where to run the model" in predict_help
    assert "several GPUs" in run_cli("train", "--help").stdout
    bogus = run_cli("train", "--bogus")
    assert bogus.exit_code == 2 and "No such option: --bogus (see " in bogus.stderr
    assert "did you mean" not in bogus.stderr
    typo = run_cli("finetune", "--epoch", "3")
    assert typo.exit_code == 2 and "(did you mean: --epochs?)" in typo.stderr
    assert "(did you mean: --version?)" in run_cli("--verison").stderr
