"""Hostile files: nothing a weights or data file carries runs, whatever command opens it.

Each hostile pickle, if unpickled, creates a marker file (the sanity test
proves it does, through the loader that would open it). Every command that
opens such a file must exit 1 with one ``Error:`` line naming the file and
what it refused, the marker never appearing; genuine files open unchanged and
``--trust-pickle`` opens a file the user trusts.
"""

import datetime
import io
import json
import os
import pickle
import tarfile
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
}
UNPICKLED_BY_TORCH = [name for name in HOSTILE if name != "model yaml activation"]


def run_unchecked(path: Path) -> None:
    """What Ultralytics does with a .pt: torch.load(weights_only=False), then, to train, rebuild from its yaml."""
    from vqtool.detection.ultralytics_env import load_ultralytics

    load_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    try:
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


@pytest.mark.parametrize("kind", ["plain pickle", "torch zip", "torch legacy", "model yaml activation"])
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


def test_a_hostile_cached_torchvision_weights_file_is_refused(run_cli, cached_resnet18, class_tree, marker):
    import torchvision

    torch.save({"fc.weight": Shell(marker)}, cached_resnet18)
    torchvision.models.ResNet18_Weights.DEFAULT.get_state_dict(progress=False, check_hash=True)  # this runs it
    assert marker.exists()
    marker.unlink()
    for args in (["conv", "summary", "resnet18", "--weights", "DEFAULT"],
                 ["finetune", class_tree, "--model", "resnet18", "--epochs", "1"]):
        assert_refused(run_cli(*args), cached_resnet18, "posix.system", marker)


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
