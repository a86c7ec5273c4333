"""Hostile files: nothing a weights or data file carries runs, whatever command opens it.

Each hostile pickle, if unpickled, creates a marker file (the sanity test
proves it does, through the loader that would open it). Every command that
opens such a file must exit 1 with one ``Error:`` line naming the file and
what it refused, the marker never appearing; genuine files open unchanged and
``--trust-pickle`` opens a file the user trusts.
"""

import contextlib
import datetime
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ASSETS, requires_assets
from test_detect import make_yolo_dataset


@pytest.fixture(scope="module", autouse=True)
def own_vqtool_home(tmp_path_factory):
    """Ultralytics' settings and fonts live in a temporary vqtool home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VQTOOL_HOME", str(tmp_path_factory.mktemp("vqtool-home")))
        patch.delenv("VQTOOL_TRUST_PICKLE", raising=False)
        yield


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> Path:
    """A checkpoint Ultralytics writes itself: yolov8n.yaml built and saved with YOLO.save."""
    from vqtool.detection.ultralytics_env import load_ultralytics

    path = tmp_path_factory.mktemp("genuine") / "yolov8n.pt"
    load_ultralytics().YOLO("yolov8n.yaml").save(str(path))
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code-ran"


# --- what the hostile files carry -----------------------------------------------------------------


class Shell:
    """Unpickled, runs ``touch MARKER`` through os.system (pickled as posix.system)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class Exec(Shell):
    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


class BuildsAModel(Shell):
    """Calls an allowed class instead of rebuilding it: DetectionModel(yaml) evals the yaml's activation."""

    def __reduce__(self):
        from ultralytics.nn.tasks import DetectionModel

        return DetectionModel, ({"nc": 1, "activation": touch_code(self.marker),
                                 "backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": []},)


def touch_code(marker) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


def short_text(value: str) -> bytes:
    data = value.encode()
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE


def stack_global_from_memo(marker) -> bytes:
    """PROTO 4; the names go into the memo and off the stack; BINGET them back; STACK_GLOBAL; call."""
    return b"".join([b"\x80\x04", short_text("posix"), b"\x94", short_text("system"), b"\x94", b"00",
                     b"h\x00h\x01\x93", short_text(f"touch '{marker}'"), b"\x85R."])


def stack_global_from_overwritten_memo(marker) -> bytes:
    """Harmless names stored first at memo 0 and 1, then overwritten there by posix/system."""
    stored = [short_text(name) + b"q" + bytes([index]) + b"0"
              for names in (("collections", "OrderedDict"), ("posix", "system")) for index, name in enumerate(names)]
    return b"".join([b"\x80\x04", *stored, b"h\x00h\x01\x93", short_text(f"touch '{marker}'"), b"\x85R."])


def protocol_0_inst(marker) -> bytes:
    return f"(S'touch {marker}'\nios\nsystem\n.".encode()


def legacy_tar(marker) -> bytes:
    """torch's pre-1.0 tar format, whose ``storages`` member torch unpickles first."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("storages", "tensors", "pickle"):
            data = pickle.dumps(Shell(marker), protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# --- zip checkpoints whose pickle torch's reader and another reader could find differently ------------


def zip_parts(members, base: int = 0) -> tuple[bytes, bytes]:
    """The local headers with data, and the central directory (offsets counted from ``base``), of stored members."""
    local, central = b"", b""
    for name, data in members:
        raw, crc = name.encode(), zlib.crc32(data)
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, len(data), len(data),
                               len(raw), 0, 0, 0, 0, 0, base + len(local)) + raw
        local += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data), len(data), len(raw),
                             0) + raw + data
    return local, central


def end_record(count: int, size: int, offset: int, comment: bytes = b"") -> bytes:
    return struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, size, offset, len(comment)) + comment


def archive(members, base: int = 0, comment: bytes = b"") -> bytes:
    local, central = zip_parts(members, base)
    return local + central + end_record(len(members), len(central), base + len(local), comment)


def records(pickled: bytes, root: str = "archive") -> list[tuple[str, bytes]]:
    """The records torch.load needs: the pickle, the byte order and the format version."""
    return [(f"{root}/data.pkl", pickled), (f"{root}/byteorder", b"little"), (f"{root}/version", b"3\n")]


def pickles_of_one_length(marker) -> tuple[bytes, bytes]:
    """(the hostile pickle, a harmless one of the same length): archives of either have the same layout."""
    hostile = pickle.dumps(Shell(marker), protocol=2)
    harmless = next(p for k in range(len(hostile)) if len(p := pickle.dumps("x" * k, protocol=2)) == len(hostile))
    return hostile, harmless


def directory_counted_from_a_prefix(marker) -> bytes:
    """torch's reader takes the end record's directory offset as it is and finds the hostile archive first;
    Python's zipfile reads the offset as counted from a prefix and finds the harmless one after it."""
    hostile, harmless = pickles_of_one_length(marker)
    hostile_local, hostile_directory = zip_parts(records(hostile))
    harmless_local, harmless_directory = zip_parts(records(harmless))
    return (hostile_local + hostile_directory + harmless_local + harmless_directory
            + end_record(3, len(harmless_directory), len(hostile_local)))


def duplicate_names(marker, hostile_first: bool, name: str = "archive/data.pkl") -> bytes:
    hostile, harmless = pickles_of_one_length(marker)
    members = [(name, hostile), *records(harmless)] if hostile_first else [*records(harmless), (name, hostile)]
    return archive(members)


def local_header_renamed(marker) -> bytes:
    """The directory names data.pkl; the local header it points to names another member."""
    hostile, _ = pickles_of_one_length(marker)
    data = archive(records(hostile))
    return data.replace(b"archive/data.pkl", b"archive/data.pkx", 1)


def compressed(marker) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in records(pickle.dumps(Shell(marker), protocol=2)):
            zipped.writestr(name, data)
    return buffer.getvalue()


def genuine_archive(genuine: Path) -> bytes:
    return genuine.read_bytes()


# name -> the archive's bytes from (marker, genuine checkpoint), and whether torch.load runs its code
HOSTILE_ZIPS = {
    "directory counted from a prefix": (lambda m, g: directory_counted_from_a_prefix(m), True),
    "duplicate data.pkl, hostile first": (lambda m, g: duplicate_names(m, hostile_first=True), True),
    "duplicate data.pkl, hostile second": (lambda m, g: duplicate_names(m, hostile_first=False), False),
    "duplicate data.pkl in other case": (lambda m, g: duplicate_names(m, True, "archive/DATA.PKL"), False),
    "data before the first entry": (lambda m, g: b"PK\x03\x04" + bytes(60) + archive(
        records(pickle.dumps(Shell(m), protocol=2)), base=64), True),
    "second archive appended": (lambda m, g: (lambda first: first + archive(
        records(pickle.dumps(Shell(m), protocol=2)), base=len(first)))(genuine_archive(g)), True),
    "trailing data after the end record": (lambda m, g: archive(records(pickle.dumps(Shell(m), protocol=2)),
                                                                comment=b"x" * 16)[:-16] + b"x" * 8, False),
    "comment after the end record": (lambda m, g: archive(records(pickle.dumps(Shell(m), protocol=2)),
                                                          comment=b"hello"), True),
    "another root folder": (lambda m, g: archive([*records(pickles_of_one_length(m)[1]),
                                                  *records(pickle.dumps(Shell(m)), root="other")]), False),
    "another pickle member": (lambda m, g: archive([*records(pickles_of_one_length(m)[1]),
                                                    ("archive/constants.pkl", pickle.dumps(Shell(m)))]), False),
    "local header disagreeing with the directory": (lambda m, g: local_header_renamed(m), True),
    "compressed data.pkl": (lambda m, g: compressed(m), True),
}
RUNS_IN_TORCH = [name for name, (_, runs) in HOSTILE_ZIPS.items() if runs]


def with_activation(genuine: Path, marker, path: Path) -> None:
    """The genuine checkpoint with a model yaml whose activation Ultralytics evals when it rebuilds the model."""
    checkpoint = torch.load(genuine, map_location="cpu", weights_only=False)
    checkpoint["model"].yaml["activation"] = touch_code(marker)
    torch.save(checkpoint, path)


# name -> (writes the hostile .pt to path, what the error names)
HOSTILE = {
    "plain pickle": (lambda path, m, g: path.write_bytes(pickle.dumps(Shell(m))), "posix.system"),
    "torch zip": (lambda path, m, g: torch.save({"model": Shell(m)}, path), "posix.system"),
    "torch legacy": (lambda path, m, g: torch.save({"model": Shell(m)}, path, _use_new_zipfile_serialization=False),
                     "posix.system"),
    "nested in a dict": (lambda path, m, g: torch.save({"model": None, "train_args": {"a": [1, {"b": (Shell(m),)}]}},
                                                       path), "posix.system"),
    "stack global via memo": (lambda path, m, g: path.write_bytes(stack_global_from_memo(m)), "posix.system"),
    "stack global via overwritten memo": (lambda path, m, g: path.write_bytes(stack_global_from_overwritten_memo(m)),
                                          "posix.system"),
    "protocol 0 inst": (lambda path, m, g: path.write_bytes(protocol_0_inst(m)), "os.system"),
    "builtins.exec": (lambda path, m, g: torch.save({"model": Exec(m)}, path), "builtins.exec"),
    "allowed class called": (lambda path, m, g: torch.save({"model": BuildsAModel(m)}, path),
                             "calls ultralytics.nn.tasks.DetectionModel"),
    "legacy tar": (lambda path, m, g: path.write_bytes(legacy_tar(m)), "tar archive"),
    "model yaml activation": (lambda path, m, g: with_activation(g, m, path), "activation"),
    "zip read two ways": (lambda path, m, g: path.write_bytes(directory_counted_from_a_prefix(m)), "zip archive"),
}
UNPICKLED_BY_TORCH = [name for name in HOSTILE if name != "model yaml activation"]


@contextlib.contextmanager
def unchecked():
    """As --trust-pickle: the guarded torch.load and numpy.load (vqtool.pickles.guard_loaders) check nothing."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VQTOOL_TRUST_PICKLE", "1")
        yield


def run_unchecked(path: Path) -> None:
    """What Ultralytics does with a .pt: torch.load(weights_only=False), then, to train, rebuild from its yaml."""
    from vqtool.detection.ultralytics_env import load_ultralytics

    load_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    try:
        with unchecked():
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
            DetectionModel(checkpoint["model"].yaml)
    except Exception:  # the payloads break what follows them; what counts is that they ran
        pass


@pytest.mark.parametrize("kind", HOSTILE)
def test_each_hostile_file_does_run_code_when_opened_unchecked(kind, marker, genuine, tmp_path):
    HOSTILE[kind][0](tmp_path / "evil.pt", marker, genuine)
    run_unchecked(tmp_path / "evil.pt")
    assert marker.exists()


def assert_refused(result, path: Path, named: str, marker: Path) -> None:
    assert result.exit_code == 1, result.output
    assert not marker.exists()
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert str(path) in result.stderr and named in result.stderr, result.stderr
    assert "Traceback" not in result.output


# --- every command that opens a .pt ---------------------------------------------------------------

# (command line, where the hostile file lies: given by name, or a detector run folder's model.pt or last.pt)
COMMANDS = [
    ("eval {file} {data}", "file"),
    ("confusion {file} {data}", "file"),
    ("detect {images} -w {file}", "file"),
    ("detect {images} -w {file} --format csv", "file"),
    ("predict {images} -w {file}", "file"),
    ("export {file} -o {tmp}/out.onnx", "file"),
    ("finetune {data} --weights {file} --epochs 1", "file"),
    ("eval {run} {data}", "run/model.pt"),
    ("confusion {run} {data}", "run/model.pt"),
    ("detect {images} -w {run}", "run/model.pt"),
    ("export {run}", "run/model.pt"),
    ("train --resume {run}", "run/ultralytics/weights/last.pt"),
    ("finetune {data} --resume {run}", "run/ultralytics/weights/last.pt"),
]
PLACES = {"file": "evil.pt", "run/model.pt": "run/model.pt",
          "run/ultralytics/weights/last.pt": "run/ultralytics/weights/last.pt"}


@pytest.fixture
def scene(tmp_path):
    """A data.yaml, its images, and a detector run folder (args.json and the ultralytics/ folder)."""
    data = make_yolo_dataset(tmp_path / "shapes", train=2, val=2)
    run = tmp_path / "run"
    (run / "ultralytics" / "weights").mkdir(parents=True)
    (run / "args.json").write_text(json.dumps({"command": "train", "args": {"dataset": str(data)}}))
    return {"data": data, "images": data.parent / "images", "run": run, "tmp": tmp_path, "file": tmp_path / "evil.pt"}


def command_line(template: str, scene: dict) -> list[str]:
    return template.format(**{key: str(value) for key, value in scene.items()}).split()


@pytest.mark.parametrize("kind", ["plain pickle", "torch zip", "torch legacy", "model yaml activation",
                                  "zip read two ways"])
@pytest.mark.parametrize("template, place", COMMANDS)
def test_every_command_refuses_a_hostile_checkpoint(run_cli, scene, genuine, marker, template, place, kind):
    path = scene["tmp"] / PLACES[place]
    write, named = HOSTILE[kind]
    write(path, marker, genuine)
    assert_refused(run_cli(*command_line(template, scene)), path, named, marker)


@pytest.mark.parametrize("kind", [kind for kind in HOSTILE if kind != "model yaml activation"])
def test_every_kind_of_hostile_pickle_is_refused(run_cli, scene, genuine, marker, kind):
    write, named = HOSTILE[kind]
    write(scene["file"], marker, genuine)
    assert_refused(run_cli("detect", scene["images"], "-w", scene["file"]), scene["file"], named, marker)


@pytest.mark.parametrize("kind", RUNS_IN_TORCH)
def test_each_hostile_zip_does_run_code_through_torch_load(kind, marker, genuine, tmp_path):
    (tmp_path / "evil.pt").write_bytes(HOSTILE_ZIPS[kind][0](marker, genuine))
    with unchecked(), contextlib.suppress(Exception):
        torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_zipfile_and_torch_read_different_pickles_from_one_archive(marker, tmp_path):
    """Why the check has its own reader: Python's zipfile finds the harmless pickle where torch finds the other."""
    hostile, harmless = pickles_of_one_length(marker)
    (tmp_path / "evil.pt").write_bytes(directory_counted_from_a_prefix(marker))
    assert zipfile.ZipFile(tmp_path / "evil.pt").read("archive/data.pkl") == harmless
    with unchecked(), contextlib.suppress(Exception):
        torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", HOSTILE_ZIPS)
def test_every_ambiguous_zip_is_refused(run_cli, scene, genuine, marker, kind):
    scene["file"].write_bytes(HOSTILE_ZIPS[kind][0](marker, genuine))
    assert_refused(run_cli("detect", scene["images"], "-w", scene["file"]), scene["file"], "zip archive", marker)


def test_an_archive_as_torch_save_writes_it_passes(tmp_path):
    """torch.save's own layout (data descriptors, alignment padding, zip64 end records) and vqtool's test
    writer's (none of them) both pass, tensors and all."""
    from vqtool.pickles import TORCHVISION_WEIGHTS, check

    torch.save({"weight": torch.ones(3, 3), "bias": torch.zeros(3)}, tmp_path / "saved.pt")
    check(tmp_path / "saved.pt", TORCHVISION_WEIGHTS)
    (tmp_path / "written.pt").write_bytes(archive(records(pickle.dumps({"a": 1}, protocol=2))))
    check(tmp_path / "written.pt", TORCHVISION_WEIGHTS)
    assert torch.load(tmp_path / "written.pt", weights_only=False) == {"a": 1}


# --- the guarded loaders: whatever a library unpickles is checked ---------------------------------


def test_guarded_loaders_check_what_any_library_unpickles(marker, genuine, tmp_path):
    from vqtool.pickles import UnsafeFile, guard_loaders

    guard_loaders()
    evil, cache = tmp_path / "evil.pt", tmp_path / "labels.cache"
    torch.save({"model": Shell(marker)}, evil)
    with open(cache, "wb") as f:
        np.save(f, np.array({"labels": [Shell(marker)]}, dtype=object), allow_pickle=True)
    for load in (lambda: torch.load(evil, weights_only=False), lambda: torch.load(evil),
                 lambda: torch.serialization.load(evil, weights_only=False),
                 lambda: torch.load(f=evil, weights_only=False), lambda: np.load(file=cache, allow_pickle=True),
                 lambda: np.load(cache, allow_pickle=True), lambda: np.load(cache, None, True),
                 lambda: torch.load(io.BytesIO(evil.read_bytes()), weights_only=False)):
        with pytest.raises(UnsafeFile, match="posix.system"):
            load()
    assert not marker.exists()
    assert torch.load(genuine, weights_only=False)["model"] is not None
    with pytest.raises(pickle.UnpicklingError):  # weights_only=True: torch's own restricted unpickler decides
        torch.load(evil, weights_only=True)


def test_ultralytics_own_loaders_are_guarded(marker, genuine, tmp_path):
    """Paths vqtool does not check itself (a distillation teacher, any label cache, any backend) meet the check
    all the same."""
    from vqtool.detection.ultralytics_env import load_ultralytics
    from vqtool.pickles import UnsafeFile

    load_ultralytics()
    from ultralytics.data.utils import load_dataset_cache_file
    from ultralytics.nn.tasks import load_checkpoint

    evil, cache = tmp_path / "teacher.pt", tmp_path / "deep" / "labels" / "nested.cache"
    torch.save({"model": Shell(marker)}, evil)
    cache.parent.mkdir(parents=True)
    with open(cache, "wb") as f:
        np.save(f, np.array({"labels": [Shell(marker)]}, dtype=object), allow_pickle=True)
    from ultralytics.nn.autobackend import AutoBackend

    for load in (lambda: load_checkpoint(str(evil)), lambda: load_dataset_cache_file(cache),
                 lambda: AutoBackend(str(evil), device=torch.device("cpu"))):
        with pytest.raises(UnsafeFile, match="posix.system"):
            load()
    assert not marker.exists()
    assert load_checkpoint(str(genuine))[0] is not None


@pytest.mark.parametrize("split, folder", [("train", "train"), ("val", "val"), ("test", "val"),
                                           ("val", "val/nested")])
def test_hostile_label_caches_of_every_split_and_folder_are_refused(run_cli, genuine, marker, tmp_path, split,
                                                                    folder):
    data = make_yolo_dataset(tmp_path / "shapes", train=2, val=2)
    root = data.parent
    if folder == "val/nested":  # the val images in a subfolder: Ultralytics reads labels/val/nested.cache
        (root / "images" / "val" / "nested").mkdir()
        (root / "labels" / "val" / "nested").mkdir()
        for image in sorted((root / "images" / "val").glob("*.png")):
            image.rename(root / "images" / "val" / "nested" / image.name)
        for label in sorted((root / "labels" / "val").glob("*.txt")):
            label.rename(root / "labels" / "val" / "nested" / label.name)
    if split == "test":
        data.write_text(data.read_text() + "test: images/val\n")
    cache = root / "labels" / f"{folder}.cache"
    with open(cache, "wb") as f:
        np.save(f, np.array({"labels": [Shell(marker)], "version": "1.0.3"}, dtype=object), allow_pickle=True)
    args = ("train", data, "--epochs", "1", "--imgsz", "32") if split == "train" else (
        "eval", genuine, data, "--split", split)
    assert_refused(run_cli(*args), cache, "posix.system", marker)


# --- resuming a detector run reads only the run's own files ---------------------------------------


def with_train_args(genuine: Path, path: Path, **args) -> None:
    checkpoint = torch.load(genuine, map_location="cpu", weights_only=False)
    checkpoint.update(epoch=0, optimizer={}, train_args={"epochs": 3, "amp": False, **args})
    torch.save(checkpoint, path)


@pytest.mark.parametrize("args, says", [
    ({"distill_model": "{tmp}/teacher.pt"}, "distillation teacher"),
    ({"distill_model": "https://example.com/teacher.pt"}, "distillation teacher"),
    ({"pretrained": "{tmp}/teacher.pt"}, "pretrained weights"),
    ({"cache": "https://example.com/x"}, "URL"),
    ({"amp": True}, "AMP check"),
])
def test_resume_refuses_a_state_that_would_load_or_download_other_files(run_cli, scene, genuine, marker, args,
                                                                         says):
    HOSTILE["torch zip"][0](scene["tmp"] / "teacher.pt", marker, genuine)
    last = scene["run"] / "ultralytics" / "weights" / "last.pt"
    with_train_args(genuine, last, **{k: v.format(tmp=scene["tmp"]) if isinstance(v, str) else v
                                      for k, v in args.items()})
    result = run_cli("train", "--resume", scene["run"])
    assert result.exit_code == 1 and str(last) in result.stderr and says in result.stderr, result.output
    assert result.stderr.count("\n") == 1 and not marker.exists()


def test_resume_refuses_a_commit_folder_that_is_a_symbolic_link(run_cli, scene, genuine, tmp_path):
    (scene["run"] / "ultralytics" / "weights" / "last.pt").write_bytes(genuine.read_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "metrics.csv").write_text("someone else's\n")
    (scene["run"] / ".commit").symlink_to(elsewhere)
    result = run_cli("train", "--resume", scene["run"])
    assert result.exit_code == 1 and ".commit" in result.stderr and result.stderr.count("\n") == 1, result.output
    assert (elsewhere / "metrics.csv").read_text() == "someone else's\n" and not (scene["run"] / "metrics.csv").exists()


def test_resume_refuses_a_hostile_best_pt_beside_a_genuine_last_pt(run_cli, scene, genuine, marker):
    """Ultralytics unpickles best.pt when training ends and vqtool copies it to model.pt."""
    weights = scene["run"] / "ultralytics" / "weights"
    (weights / "last.pt").write_bytes(genuine.read_bytes())
    HOSTILE["torch zip"][0](weights / "best.pt", marker, genuine)
    assert_refused(run_cli("train", "--resume", scene["run"]), weights / "best.pt", "posix.system", marker)


def test_a_hostile_label_cache_is_refused(run_cli, scene, genuine, marker):
    """Ultralytics np.load(allow_pickle=True)s labels/<split>.cache before it scans the labels."""
    cache = scene["data"].parent / "labels" / "val.cache"
    with open(cache, "wb") as f:
        np.save(f, np.array({"labels": [Shell(marker)], "version": "1.0.3"}, dtype=object), allow_pickle=True)
    with unchecked():
        np.load(cache, allow_pickle=True)  # the sanity check: this runs it
    assert marker.exists()
    marker.unlink()
    assert_refused(run_cli("eval", genuine, scene["data"]), cache, "posix.system", marker)


def test_label_caches_ultralytics_writes_pass(scene):
    from vqtool.detection.data import label_caches, load_yolo
    from vqtool.detection.ultralytics_env import load_ultralytics

    load_ultralytics()
    from ultralytics.data.utils import save_dataset_cache_file

    labels = scene["data"].parent / "labels"
    cache = {"labels": [{"im_file": "0.png", "shape": (64, 64), "cls": np.zeros((1, 1), np.float32),
                         "bboxes": np.zeros((1, 4), np.float32), "segments": [], "normalized": True,
                         "bbox_format": "xywh"}], "hash": "x", "results": (1, 0, 0, 0, 1), "msgs": []}
    for split in ("train", "val"):
        save_dataset_cache_file("", labels / f"{split}.cache", dict(cache), "1.0.3")
    assert label_caches(load_yolo(str(scene["data"])).splits) == [labels / "train.cache", labels / "val.cache"]


# --- model yamls: Ultralytics evals the activation and calls each layer's module by name ---------

LAYERS = {"backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]]],
          "head": [[-1, 1, "Conv", [16, 3, 2]]]}


@pytest.mark.parametrize("spec, says", [
    ({**LAYERS}, None),
    ({**LAYERS, "activation": "nn.SiLU()"}, None),
    ({**LAYERS, "activation": "torch.nn.LeakyReLU(-0.1, inplace=True)"}, None),
    ({**LAYERS, "activation": "__import__('os').system('true')"}, "activation"),
    ({**LAYERS, "activation": "nn.Sequential(exec)"}, "activation"),
    ({**LAYERS, "activation": "nn.functional.relu"}, "activation"),
    ({**LAYERS, "head": [[-1, 1, "attempt_load_weights", ["other.pt"]]]}, "layer module 'attempt_load_weights'"),
    ({**LAYERS, "head": [[-1, 1, "nn.init", []]]}, "layer module 'nn.init'"),
    ({**LAYERS, "head": [[-1, 1, "DetectionModel", ["other.yaml"]]]}, "layer module 'DetectionModel'"),
    ({**LAYERS, "head": [[-1, 1, "TorchVision", [512, "resnet18", "DEFAULT", True, 2]]]},
     "layer module 'TorchVision'"),
    ({**LAYERS, "head": [[-1, 1, "torchvision.ops.DeformConv2d", [16, 16, 3]]]}, "torchvision.ops"),
    ({**LAYERS, "head": [[-1, 1, "Conv", [16, {"cfg": "other.yaml"}]]]}, "args are not plain"),
    ({**LAYERS, "head": [[-1, 1, "Conv"]]}, "not \\[from, repeats, module, args\\]"),
    ({**LAYERS, "nc": torch.nn.Identity()}, "values other than numbers"),
    ({"backbone": "Conv"}, "no backbone and head"),
    ([LAYERS], "not a mapping"),
])
def test_model_yamls_that_would_run_code_are_refused(genuine, spec, says):
    from vqtool.detection.weights import check_model_spec
    from vqtool.pickles import UnsafeFile

    if says is None:
        check_model_spec(spec, "m.yaml")
    else:
        with pytest.raises(UnsafeFile, match=says):
            check_model_spec(spec, "m.yaml")


def test_train_refuses_a_model_yaml_that_would_run_code(run_cli, scene, marker):
    from vqtool.detection.ultralytics_env import load_ultralytics

    model = scene["tmp"] / "evil.yaml"
    model.write_text(f"nc: 2\nactivation: \"{touch_code(marker)}\"\n"
                     "backbone:\n  - [-1, 1, Conv, [16, 3, 2]]\nhead:\n  - [[0], 1, Detect, [nc]]\n")
    with pytest.raises(TypeError):  # the sanity check: building it runs the activation (None, then not callable)
        load_ultralytics().YOLO(str(model))
    assert marker.exists()
    marker.unlink()
    assert_refused(run_cli("train", scene["data"], "--model", model, "--epochs", "1"), model, "activation", marker)


def nested_yaml(folder: Path, marker) -> Path:
    """A model yaml whose second layer is a whole model, built from another yaml whose activation runs code
    (named relative to the working folder, which ``folder`` is: parse_model's literal_eval fails on a '/')."""
    inner = folder / "inner.yaml"
    inner.write_text(f"nc: 2\nactivation: \"{touch_code(marker)}\"\n"
                     "backbone:\n  - [-1, 1, Conv, [16, 3, 2]]\nhead:\n  - [[0], 1, Detect, [nc]]\n")
    outer = folder / "nested.yaml"
    outer.write_text(f"nc: 2\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, DetectionModel, [{inner.name}]]\n"
                     "head:\n  - [[0], 1, Detect, [nc]]\n")
    return outer


def torchvision_layer_yaml(folder: Path) -> Path:
    """A model yaml whose first layer is torchvision's resnet18 with its DEFAULT weights (torch.hub's cache)."""
    path = folder / "tvlayer.yaml"
    path.write_text("nc: 2\nbackbone:\n  - [-1, 1, TorchVision, [512, resnet18, DEFAULT, True, 2]]\n"
                    "head:\n  - [[0], 1, Detect, [nc]]\n")
    return path


def test_a_nested_model_yaml_is_refused(run_cli, scene, marker):
    from vqtool.detection.ultralytics_env import load_ultralytics

    model = nested_yaml(scene["tmp"], marker)
    with contextlib.suppress(Exception):  # the sanity check: building it builds the inner model too
        load_ultralytics().YOLO(str(model))
    assert marker.exists()
    marker.unlink()
    assert_refused(run_cli("train", scene["data"], "--model", model, "--epochs", "1"), model,
                   "layer module 'DetectionModel'", marker)


def test_a_torchvision_layer_is_refused(run_cli, scene, marker, cached_resnet18):
    from vqtool.detection.ultralytics_env import load_ultralytics

    torch.save({"fc.weight": Shell(marker)}, cached_resnet18)
    model = torchvision_layer_yaml(scene["tmp"])
    with unchecked(), contextlib.suppress(Exception):  # the sanity check: building it unpickles the cached weights
        load_ultralytics().YOLO(str(model))
    assert marker.exists()
    marker.unlink()
    assert_refused(run_cli("train", scene["data"], "--model", model, "--epochs", "1"), model,
                   "layer module 'TorchVision'", marker)


@pytest.mark.parametrize("layer, says", [
    ([-1, 1, "DetectionModel", ["inner.yaml"]], "layer module 'DetectionModel'"),
    ([-1, 1, "TorchVision", [512, "resnet18", "DEFAULT", True, 2]], "layer module 'TorchVision'"),
])
def test_finetune_refuses_a_checkpoint_whose_model_yaml_nests_or_loads(run_cli, scene, genuine, marker, layer, says):
    checkpoint = torch.load(genuine, map_location="cpu", weights_only=False)
    checkpoint["model"].yaml["backbone"].append(layer)
    torch.save(checkpoint, scene["file"])
    assert_refused(run_cli("finetune", scene["data"], "--weights", scene["file"], "--epochs", "1"), scene["file"],
                   says, marker)


def test_finetune_of_a_checkpoint_whose_model_yaml_does_not_build_is_one_line(run_cli, scene, genuine, tmp_path):
    checkpoint = torch.load(genuine, map_location="cpu", weights_only=False)
    checkpoint["model"].yaml["backbone"][0] = [-1, 1, "Conv", ["sixteen", 3, 2]]
    torch.save(checkpoint, scene["file"])
    result = run_cli("finetune", scene["data"], "--weights", scene["file"], "--epochs", "1", "--out", tmp_path / "ft")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith(f"Error: {scene['file']}: its model yaml does not build")
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize("text", ["backbone: [", "- just\n- a list\n", "nc: 2\n", "\x00\x01binary"])
def test_model_yamls_that_are_not_models_are_one_line_errors(run_cli, scene, text):
    model = scene["tmp"] / "bad.yaml"
    model.write_text(text)
    result = run_cli("train", scene["data"], "--model", model, "--epochs", "1")
    assert result.exit_code in (1, 2) and result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, \
        result.output
    assert str(model) in result.stderr


# --- genuine and trusted checkpoints --------------------------------------------------------------


def test_a_checkpoint_ultralytics_wrote_opens_without_trust_pickle(run_cli, scene, genuine):
    result = run_cli("detect", scene["images"], "-w", genuine, "--imgsz", "64", "--json", "-q")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 4


@pytest.mark.parametrize("trust", ["option", "environment"])
def test_trust_pickle_opens_a_file_the_check_refuses(run_cli, scene, genuine, monkeypatch, trust):
    checkpoint = torch.load(genuine, map_location="cpu", weights_only=False)
    checkpoint["note"] = datetime.date(2026, 1, 1)  # harmless, but no genuine checkpoint holds a date object
    torch.save(checkpoint, scene["file"])
    args = ["detect", scene["images"], "-w", scene["file"], "--imgsz", "64", "--json", "-q"]
    refused = run_cli(*args)
    assert refused.exit_code == 1 and "datetime.date" in refused.stderr and "--trust-pickle" in refused.stderr
    if trust == "environment":
        monkeypatch.setenv("VQTOOL_TRUST_PICKLE", "1")
    result = run_cli(*args, *(["--trust-pickle"] if trust == "option" else []))
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 4
    assert os.environ.get("VQTOOL_TRUST_PICKLE") == ("1" if trust == "environment" else None)  # restored


@requires_assets
@pytest.mark.assets
def test_the_fall_detector_checkpoint_passes_the_check():
    from vqtool.detection.weights import load_detector

    assert load_detector(str(Path(ASSETS) / "weights" / "yolov8-fall.pt")).task == "detect"


# --- torchvision's cached pretrained weights (torch.hub loads them with weights_only=False) ---------


@pytest.fixture
def cached_resnet18(tmp_path, monkeypatch) -> Path:
    """Where torch.hub keeps resnet18's DEFAULT weights, under a temporary TORCH_HOME."""
    import torchvision

    from vqtool.models.weights import torchvision_cache_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    path = torchvision_cache_file(torchvision.models.ResNet18_Weights.DEFAULT)
    path.parent.mkdir(parents=True)
    return path


@pytest.mark.parametrize("kind, named", [("torch zip", "posix.system"), ("zip read two ways", "zip archive")])
def test_a_hostile_cached_torchvision_weights_file_is_refused(run_cli, cached_resnet18, class_tree, genuine, marker,
                                                              kind, named):
    import torchvision

    HOSTILE[kind][0](cached_resnet18, marker, genuine)
    with unchecked(), contextlib.suppress(Exception):
        torchvision.models.ResNet18_Weights.DEFAULT.get_state_dict(progress=False, check_hash=True)  # this runs it
    assert marker.exists()
    marker.unlink()
    for args in (["conv", "summary", "resnet18", "--weights", "DEFAULT"],
                 ["finetune", class_tree, "--model", "resnet18", "--epochs", "1"]):
        assert_refused(run_cli(*args), cached_resnet18, named, marker)


def test_a_genuine_cached_torchvision_weights_file_loads(run_cli, cached_resnet18):
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), cached_resnet18)
    result = run_cli("conv", "summary", "resnet18", "--weights", "DEFAULT", "--json")
    assert result.exit_code == 0, result.output


# --- the opcode model: what is refused beyond plain names ---------------------------------------

PROTO4 = b"\x80\x04"
ORDERED_DICT = short_text("collections") + short_text("OrderedDict") + b"\x93"
CONV2D = short_text("torch.nn.modules.conv") + short_text("Conv2d") + b"\x93"
TRICKS = {  # a pickle -> what the refusal says it does
    "a call of an object it built": (PROTO4 + ORDERED_DICT + b")R" + short_text("x") + b"\x85R.", "calls an object"),
    "a name computed by a call": (PROTO4 + ORDERED_DICT + b")R" + short_text("system") + b"\x93.", "other than two strings"),
    "an extension code": (PROTO4 + b"\x82\x07.", "extension code 7"),
    "an attribute path": (PROTO4 + short_text("torch.nn.modules.conv") + short_text("Conv2d.forward") + b"\x93.",
                          "Conv2d.forward"),
    "a change to a class": (PROTO4 + CONV2D + b"}b.", "changes torch.nn.modules.conv.Conv2d"),
    "a module class called": (PROTO4 + CONV2D + b")R.", "calls torch.nn.modules.conv.Conv2d"),
    "a memo entry never stored": (PROTO4 + b"h\x05.", "memo entry 5"),
    "a torch global not on the list": (PROTO4 + short_text("torch.storage") + short_text("_load_from_bytes") + b"\x93.",
                                       "torch.storage._load_from_bytes"),
}


@pytest.mark.parametrize("trick", TRICKS)
def test_tricks_with_the_stack_and_memo_are_refused(tmp_path, trick):
    from vqtool.pickles import YOLO_CHECKPOINT, UnsafeFile, check

    data, says = TRICKS[trick]
    (tmp_path / "x.pt").write_bytes(data)
    with pytest.raises(UnsafeFile, match=says):
        check(tmp_path / "x.pt", YOLO_CHECKPOINT)


@pytest.mark.parametrize("content", ["junk", "empty", "truncated"])
def test_unreadable_files_are_one_line_errors_not_refusals(tmp_path, genuine, content):
    from vqtool.errors import VQError
    from vqtool.pickles import YOLO_CHECKPOINT, UnsafeFile, check

    data = {"junk": b"not a model", "empty": b"", "truncated": pickle.dumps({"a": [1, 2, 3]})[:-3]}[content]
    (tmp_path / "x.pt").write_bytes(data)
    with pytest.raises(VQError, match="not a readable YOLO checkpoint") as raised:
        check(tmp_path / "x.pt", YOLO_CHECKPOINT)
    assert not isinstance(raised.value, UnsafeFile)


def test_what_torch_save_writes_for_modules_tensors_and_plain_types_passes(tmp_path):
    from collections import OrderedDict

    from vqtool.pickles import YOLO_CHECKPOINT, check

    value = {"conv": torch.nn.Conv2d(3, 8, 3), "half": torch.zeros(2, dtype=torch.float16), "ids": {1, 2},
             "order": OrderedDict(a=torch.ones(1)), "size": torch.Size([2, 3]), "scalar": np.float64(0.5)}
    for zipped in (True, False):
        torch.save(value, tmp_path / "ok.pt", _use_new_zipfile_serialization=zipped)
        check(tmp_path / "ok.pt", YOLO_CHECKPOINT)


# --- CIFAR-10 python batches ----------------------------------------------------------------------

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BATCHES = ["batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


def python2_pickle(value) -> bytes:
    """A protocol-2 pickle spelled as the Python 2 originals are (numpy.core, not numpy._core)."""
    return pickle.dumps(value, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_batch(seed: int, images: int = 6) -> dict:
    rng = np.random.default_rng(seed)
    return {"batch_label": f"batch {seed}", "labels": [int(v) for v in rng.integers(0, 10, images)],
            "data": rng.integers(0, 256, (images, 3072), dtype=np.uint8),
            "filenames": [f"{seed}_{i}.png" for i in range(images)]}


@pytest.fixture
def cifar(tmp_path) -> Path:
    """--data-dir holding cifar-10-batches-py/ with six tiny batches and the meta file."""
    batches = tmp_path / "cifar-data" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    (batches / "batches.meta").write_bytes(python2_pickle({"label_names": CIFAR_CLASSES, "num_vis": 3072}))
    for seed, name in enumerate(BATCHES[1:]):
        (batches / name).write_bytes(python2_pickle(cifar_batch(seed)))
    return batches.parent


def test_genuine_cifar_batches_load(cifar):
    from vqtool.data import DataOptions, load_dataset

    dataset = load_dataset("cifar10", DataOptions(data_dir=str(cifar)))
    assert dataset.classes == CIFAR_CLASSES and len(dataset.test.labels) == 6
    assert len(dataset.train.labels) + len(dataset.val.labels) == 30


HOSTILE_BATCHES = {  # name -> (the batch's bytes, what the error names)
    "protocol 2": (lambda m: pickle.dumps({"data": Shell(m)}, protocol=2), "posix.system"),
    "nested in labels": (lambda m: pickle.dumps({"data": None, "labels": [0, [Exec(m)]]}), "builtins.exec"),
    "stack global via memo": (stack_global_from_memo, "posix.system"),
}


@pytest.mark.parametrize("kind", HOSTILE_BATCHES)
@pytest.mark.parametrize("name", ["batches.meta", "data_batch_1", "test_batch"])
def test_train_cifar10_refuses_a_hostile_batch(run_cli, cifar, marker, name, kind):
    batch = cifar / "cifar-10-batches-py" / name
    data, named = HOSTILE_BATCHES[kind]
    batch.write_bytes(data(marker))
    pickle.loads(batch.read_bytes())  # the sanity check: unpickled as before, it runs
    assert marker.exists()
    marker.unlink()
    assert_refused(run_cli("train", "cifar10", "--data-dir", cifar, "--epochs", "1"), batch, named, marker)


@pytest.mark.parametrize("content, says", [
    (b"", "not a readable CIFAR-10 batch"),
    (python2_pickle(cifar_batch(0))[:500], "not a readable CIFAR-10 batch"),
    (pickle.dumps([1, 2, 3]), "not a CIFAR-10 batch"),
    (pickle.dumps({"data": np.zeros((2, 5), np.uint8), "labels": [0, 1]}), "do not hold 32x32 colour images"),
])
def test_corrupt_cifar_batches_are_one_line_errors(run_cli, cifar, content, says):
    (cifar / "cifar-10-batches-py" / "data_batch_2").write_bytes(content)
    result = run_cli("train", "cifar10", "--data-dir", cifar, "--epochs", "1")
    assert result.exit_code == 1 and says in result.stderr and result.stderr.count("\n") == 1, result.output


def test_trust_pickle_opens_a_cifar_batch_the_check_refuses(cifar, monkeypatch):
    from vqtool.data import DataOptions, load_dataset
    from vqtool.pickles import UnsafeFile

    batch = cifar_batch(9)
    batch["saved"] = datetime.date(2026, 1, 1)
    (cifar / "cifar-10-batches-py" / "test_batch").write_bytes(python2_pickle(batch))
    with pytest.raises(UnsafeFile, match="datetime.date"):
        load_dataset("cifar10", DataOptions(data_dir=str(cifar)))
    monkeypatch.setenv("VQTOOL_TRUST_PICKLE", "1")
    assert len(load_dataset("cifar10", DataOptions(data_dir=str(cifar))).test.labels) == 6
