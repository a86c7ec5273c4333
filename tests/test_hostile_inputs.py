"""Hostile and unusual inputs, data and model-input side (issue 14): right pixels, or one clear line.

Every input is built in tmp_path. Image cases check the decoded pixels on
every path that decodes images (classifier data, conv); command cases check the
exit code, exactly one ``Error:`` line (or the warning), no traceback and no
run folder left behind.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from conftest import make_class_tree

QUICK = ("--model", "cnn-bn", "--imgsz", "32", "--epochs", "1", "-q")  # a one-epoch classifier in a second


# --- image files ----------------------------------------------------------------------------------


def write_png16(path: Path, array: np.ndarray, size: tuple[int, int] | None = None) -> Path:
    """A 16-bit PNG (grey H×W or RGB H×W×3) written by hand; ``size`` claims other dimensions (a bomb)."""
    array = array if array.ndim == 3 else array[:, :, None]
    height, width, channels = array.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    width, height = size or (width, height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    colour = {1: 0, 3: 2}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def columns(values, rows: int = 4, dtype=np.float64) -> np.ndarray:
    return np.tile(np.array(values, dtype=dtype), (rows, 1))


QUADRANT = np.kron(np.array([[255, 0], [0, 0]], dtype=np.uint8), np.ones((4, 4), dtype=np.uint8))  # top-left white
# EXIF Orientation -> how the stored pixels must be turned to be seen upright (np.rot90 turns anticlockwise)
UPRIGHT = {2: lambda a: a[:, ::-1], 3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1),
           8: lambda a: np.rot90(a, 1)}


def oriented(orientation: int, suffix: str):
    def make(folder: Path) -> Path:
        image = Image.fromarray(QUADRANT)
        exif = image.getexif()
        exif[0x0112] = orientation
        path = folder / f"orientation-{orientation}{suffix}"
        image.convert("RGB").save(path, exif=exif, **({"quality": 100} if suffix == ".jpg" else {}))
        return path
    return make


def tiff(values, dtype):
    def make(folder: Path) -> Path:
        path = folder / f"{np.dtype(dtype).name}.tif"
        Image.fromarray(columns(values, dtype=dtype)).save(path)
        return path
    return make


def png16(values):
    def make(folder: Path) -> Path:
        return write_png16(folder / "grey16.png", columns(values, dtype=np.uint16))
    return make


def png16_rgb(folder: Path) -> Path:
    rgb = np.stack([columns([0, 256, 32768, 65535]), columns([65535, 65280, 511, 0]),
                    columns([4096, 4096, 4096, 4096])], axis=-1).astype(np.uint16)
    return write_png16(folder / "rgb16.png", rgb)


@dataclass
class PixelCase:
    id: str
    make: Callable[[Path], Path]
    expected: np.ndarray  # H×W grey or H×W×3 uint8
    tolerance: int = 0  # JPEG is lossy


PIXEL_CASES = [
    PixelCase("16-bit grey PNG keeps its top 8 bits", png16([0, 256, 32768, 65535]), columns([0, 1, 128, 255])),
    PixelCase("16-bit RGB PNG", png16_rgb,
              np.stack([columns([0, 1, 128, 255]), columns([255, 255, 1, 0]), columns([16] * 4)], axis=-1)),
    PixelCase("16-bit TIFF", tiff([0, 256, 32768, 65535], np.uint16), columns([0, 1, 128, 255])),
    PixelCase("float TIFF in 0..1 is scaled", tiff([0, 0.25, 0.5, 1], np.float32), columns([0, 64, 128, 255])),
    PixelCase("float TIFF outside 0..1 is stretched", tiff([-1, 0, 1, 3], np.float32), columns([0, 64, 128, 255])),
    PixelCase("float TIFF of 0..255 values keeps them", tiff([0, 10, 200, 255], np.float32),
              columns([0, 10, 200, 255])),
    PixelCase("32-bit integer TIFF is stretched", tiff([0, 1000, 2000, 4000], np.int32), columns([0, 64, 128, 255])),
    *[PixelCase(f"EXIF orientation {o} (PNG)", oriented(o, ".png"), UPRIGHT[o](QUADRANT)) for o in UPRIGHT],
    PixelCase("EXIF orientation 6 (JPEG)", oriented(6, ".jpg"), UPRIGHT[6](QUADRANT), tolerance=12),
]


def as_expected(pixels: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Decoded RGB pixels in the expected array's layout (grey cases compare one channel)."""
    return pixels if expected.ndim == 3 else pixels[..., 0]


@pytest.mark.parametrize("case", PIXEL_CASES, ids=lambda case: case.id)
def test_every_decoding_path_gives_the_right_pixels(case, tmp_path):
    from vqtool.conv.photos import read_photo
    from vqtool.data.images import decode_files

    path = case.make(tmp_path)
    height, width = case.expected.shape[:2]
    tensors, kept, bad = decode_files([str(path)], size=height, channels=3, interpolation="nearest")
    assert not bad and kept.tolist() == [0]
    training = as_expected(tensors[0].permute(1, 2, 0).numpy(), case.expected)  # classifier data
    photo, _ = read_photo(str(path), channels=3)  # conv apply / features
    for decoded in (training, as_expected(np.asarray(photo), case.expected)):
        assert decoded.shape == case.expected.shape
        assert np.abs(decoded.astype(int) - case.expected.astype(int)).max() <= case.tolerance, decoded


def test_a_dataset_of_16_bit_pngs_records_real_statistics(run_cli, tmp_path):
    """The issue's symptom: 16-bit PNGs read as white gave mean 1.0, std 0.001."""
    for cls, level in (("dark", 16384), ("light", 49152)):
        (tmp_path / "tree" / cls).mkdir(parents=True)
        for i in range(5):
            noise = np.random.default_rng(i).integers(-2000, 2000, (16, 16))
            write_png16(tmp_path / "tree" / cls / f"{i}.png", (level + noise).astype(np.uint16))
    result = run_cli("train", tmp_path / "tree", *QUICK, "--out", "run")
    assert result.exit_code == 0, result.output
    mean = json.loads((tmp_path / "run" / "model.json").read_text())["preprocess"]["mean"]
    assert all(0.4 < value < 0.6 for value in mean), mean


# --- command cases --------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    build: Callable[[Path, pytest.MonkeyPatch], list]  # makes the inputs, returns the command line
    exit_code: int
    says: tuple[str, ...]  # in the one Error line (or in stderr, for warnings of a successful run)
    absent: tuple[str, ...] = ()  # must not exist afterwards (relative to tmp_path)
    env: dict = field(default_factory=dict)


def bomb(path: Path) -> Path:
    """A 400-megapixel PNG header on a few bytes: what a decompression bomb looks like."""
    return write_png16(path, np.zeros((1, 1), dtype=np.uint16), size=(20000, 20000))


def tree(root: Path, **options) -> Path:
    return make_class_tree(root, per_class=options.pop("per_class", 4), size=16, **options)


def tree_with_bomb(folder: Path, monkeypatch) -> Path:
    root = tree(folder / "data")
    bomb(root / "train" / "vertical" / "bomb.png")
    return root


def tree_with_truncated_image(folder: Path, monkeypatch) -> list:
    root = tree(folder / "data")
    whole = (root / "train" / "vertical" / "vertical_0.png").read_bytes()
    (root / "train" / "vertical" / "vertical_0.png").write_bytes(whole[: len(whole) // 2])
    return ["train", root, *QUICK]


def all_unreadable_class(folder: Path, monkeypatch) -> list:
    root = tree(folder / "data")
    for image in (root / "train" / "vertical").iterdir():
        image.write_bytes(b"not a png")
    return ["train", root, *QUICK]


def only_val(folder: Path, monkeypatch) -> list:
    return ["train", tree(folder / "data", splits=("val",)), *QUICK, "--out", "run"]


def val_beside_classes(folder: Path, monkeypatch) -> list:
    root = tree(folder / "data", splits=())
    tree(root, splits=("val",))
    return ["train", root, *QUICK, "--out", "run"]


def single_image_classes(folder: Path, monkeypatch) -> list:
    return ["train", tree(folder / "data", splits=(), per_class=1), *QUICK, "--out", "run"]


def unreadable(monkeypatch, *folders: Path) -> None:
    """os.scandir fails on ``folders`` as on a chmod 000 folder (tests run as root, where chmod blocks nothing)."""
    real = os.scandir
    blocked = {str(folder) for folder in folders}

    def scandir(path="."):
        if str(path) in blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def unreadable_root(folder: Path, monkeypatch) -> list:
    root = tree(folder / "data")
    unreadable(monkeypatch, root)
    return ["train", root, *QUICK, "--out", "run"]


def unreadable_subfolder(strict: bool):
    def build(folder: Path, monkeypatch) -> list:
        root = tree(folder / "data")
        nested = root / "train" / "vertical" / "more"
        nested.mkdir()
        Image.new("RGB", (16, 16)).save(nested / "x.png")
        unreadable(monkeypatch, nested)
        return ["train", root, *QUICK, "--out", "run", *(["--strict"] if strict else [])]
    return build


def checkpoint_with(change: Callable[[dict], object]):
    """A real checkpoint whose model.json is then broken by ``change`` (returns bytes to write, or edits)."""
    def build(folder: Path, monkeypatch) -> list:
        from vqtool.classification.checkpoints.format import save_checkpoint
        from vqtool.models.small import SmallCNN

        meta = {"task": "classification", "architecture": "smallcnn", "num_classes": 2, "in_channels": 1,
                "classes": ["a", "b"], "dataset": {"source": "digits"},
                "preprocess": {"size": 28, "channels": 1, "mean": [0.5], "std": [0.5]}}
        (folder / "ckpt").mkdir()
        save_checkpoint(folder / "ckpt", SmallCNN(2, 1), meta)
        document = json.loads((folder / "ckpt" / "model.json").read_text())
        written = change(document)
        path = folder / "ckpt" / "model.json"
        path.write_bytes(written) if isinstance(written, bytes) else path.write_text(json.dumps(document))
        return ["eval", folder / "ckpt"]
    return build


def empty_resume_state(folder: Path, monkeypatch) -> list:
    from vqtool.cli import cli
    from click.testing import CliRunner

    argv = ["train", str(tree(folder / "data")), *QUICK, "--out", str(folder / "run")]
    assert CliRunner().invoke(cli, argv).exit_code == 0
    (folder / "run" / "state.pt").write_bytes(b"")
    return ["train", "--resume", folder / "run", "--epochs", "3"]


def efficientnet_weights(folder: Path) -> Path:
    """A state dict of another architecture (EfficientNet-Lite0, random init) in timm's layout."""
    import timm
    import torch

    path = folder / "lite0.pth"
    torch.save(timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict(), path)
    return path


def weights_of_another_model(command: str):
    def build(folder: Path, monkeypatch) -> list:
        weights = efficientnet_weights(folder)
        if command == "conv":
            return ["conv", "summary", "resnet18", "--weights", weights]
        return ["finetune", tree(folder / "data"), "--model", "resnet18", "--weights", weights, "--imgsz", "32",
                "--epochs", "1", "-q", "--out", "run"]
    return build


# --- issue 29: lists, configs and folders that loop, hold junk or are not text ----------------------------


def csv_of(folder: Path, *extra_rows: str) -> Path:
    """labels.csv naming a small tree's images (path,label), then ``extra_rows``."""
    root = tree(folder / "data", splits=())
    rows = ["path,label", *(f"data/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(root.rglob("*.png")))]
    (folder / "labels.csv").write_text("\n".join([*rows, *extra_rows]) + "\n")
    return folder / "labels.csv"


def csv_with(*extra_rows: str):
    return lambda folder, monkeypatch: ["train", csv_of(folder, *extra_rows), *QUICK, "--out", "run"]


def csv_with_bytes(data: bytes):
    def build(folder: Path, monkeypatch) -> list:
        listing = csv_of(folder)
        listing.write_bytes(listing.read_bytes() + data)
        return ["train", listing, *QUICK, "--out", "run"]
    return build


def repeated_rows(folder: Path, monkeypatch) -> list:
    listing = csv_of(folder)
    lines = listing.read_text().splitlines()
    listing.write_text("\n".join([*lines, *lines[1:]]) + "\n")  # every image listed twice
    return ["train", listing, *QUICK, "--val-split", "0.5"]


def non_utf8_class(folder: Path, monkeypatch) -> list:
    root = tree(folder / "data", splits=())
    os.rename(root / "vertical", os.fsencode(root) + b"/v\xffrtical")
    return ["train", root, *QUICK]


def self_loop(folder: Path, monkeypatch) -> list:
    root = tree(folder / "data", splits=())
    (root / "vertical" / "loop.png").symlink_to("loop.png")
    (root / "vertical" / "dir-loop").symlink_to(".")
    return ["train", root, *QUICK]


def one_class(folder: Path, monkeypatch) -> list:
    return ["train", tree(folder / "data", splits=(), classes=("only",)), *QUICK]


def binary_config(folder: Path, monkeypatch) -> list:
    (folder / "recipe.yaml").write_bytes(bytes(range(256)) * 4)
    return ["train", "--config", folder / "recipe.yaml", *QUICK]


def cache_dir(value: str):
    def build(folder: Path, monkeypatch) -> list:
        root = tree(folder / "data", splits=())
        monkeypatch.setenv("VQTOOL_CACHE_DIR", value.format(image=root / "vertical" / "vertical_0.png"))
        return ["train", root, *QUICK, "--out", "run"]
    return build


CASES = [
    Case("image over the pixel limit is skipped and named", lambda f, m: ["train", tree_with_bomb(f, m), *QUICK],
         0, ("skipped 1 unreadable image file(s)", "bomb.png", "VQTOOL_MAX_IMAGE_PIXELS")),
    Case("image over the pixel limit with --strict", lambda f, m: ["train", tree_with_bomb(f, m), *QUICK, "--strict",
                                                                  "--out", "run"],
         1, ("1 unreadable image file(s)", "bomb.png", "decompression bomb"), absent=("run",)),
    Case("image over the pixel limit in conv apply", lambda f, m: ["conv", "apply", bomb(f / "bomb.png")],
         2, ("bomb.png", "not an image vqtool can read", "VQTOOL_MAX_IMAGE_PIXELS")),
    Case("a lowered pixel limit applies to ordinary images",
         lambda f, m: ["conv", "apply", make_class_tree(f / "t", per_class=1, size=64, splits=()) / "vertical" /
                       "vertical_0.png"],
         2, ("over the limit of 1,000 pixels",), env={"VQTOOL_MAX_IMAGE_PIXELS": "1000"}),
    Case("a pixel limit that is not a number", lambda f, m: ["conv", "apply", bomb(f / "bomb.png")],
         2, ("VQTOOL_MAX_IMAGE_PIXELS='lots'",), env={"VQTOOL_MAX_IMAGE_PIXELS": "lots"}),
    Case("a truncated image is skipped and named", tree_with_truncated_image,
         0, ("skipped 1 unreadable image file(s)", "vertical_0.png")),
    Case("a class whose images are all unreadable", all_unreadable_class,
         1, ("class vertical has no readable image in the train split", "cannot be trained")),
    Case("a tree holding only val/ does not train as a class named val", only_val,
         2, ("has no train split (it has val)",), absent=("run",)),
    Case("val/ beside class folders without train/", val_beside_classes,
         2, ("split folders", "put the class folders under train/"), absent=("run",)),
    Case("a split too small to hold out validation images", single_image_classes,
         2, ("holds out no image of 2", "--val-split 0"), absent=("run",)),
    Case("an unreadable dataset root", unreadable_root, 1, ("cannot read the folder (Permission denied)",),
         absent=("run",)),
    Case("an unreadable subfolder is skipped and named", unreadable_subfolder(strict=False),
         0, ("skipped 1 unreadable folder(s)", "more (cannot read the folder (Permission denied))")),
    Case("an unreadable subfolder with --strict", unreadable_subfolder(strict=True),
         1, ("1 unreadable folder(s)", "more"), absent=("run",)),
    Case("model.json that is not UTF-8", checkpoint_with(lambda d: b"\xff\xfe{not utf-8"), 1, ("cannot read",)),
    Case("model.json nested too deeply", checkpoint_with(lambda d: b"[" * 100_000), 1, ("cannot read",)),
    Case("model.json without architecture", checkpoint_with(lambda d: d.pop("architecture")),
         2, ("lacks 'architecture'",)),
    Case("model.json with num_classes as text", checkpoint_with(lambda d: d.update(num_classes="2")),
         2, ("num_classes must be a positive whole number",)),
    Case("model.json whose classes are not a list", checkpoint_with(lambda d: d.update(classes="ab")),
         2, ("classes must be a list",)),
    Case("model.json with too few classes", checkpoint_with(lambda d: d.update(classes=["a"])),
         2, ("classes must be 2 class names",)),
    Case("model.json with a broken preprocess", checkpoint_with(lambda d: d["preprocess"].update(mean="grey")),
         2, ("mean and std must be lists of numbers",)),
    Case("model.json with a preprocess of other fields", checkpoint_with(lambda d: d.update(preprocess={"x": 1})),
         2, ("preprocess must have size",)),
    Case("model.json with format_version as text", checkpoint_with(lambda d: d.update(format_version="1")),
         2, ("format_version must be a whole number",)),
    Case("model.json with model_options of the wrong type", checkpoint_with(lambda d: d.update(model_options=[1])),
         2, ("model_options must be an object",)),
    Case("model.json whose dataset is not an object", checkpoint_with(lambda d: d.update(dataset="digits")),
         2, ("dataset must be an object",)),
    Case("model.json with an unknown model option", checkpoint_with(lambda d: d.update(model_options={"x": 1})),
         1, ("unsupported model options",)),
    Case("an empty resume state", empty_resume_state, 1, ("cannot read the resume state (the file is empty)",)),
    Case("weights of another architecture in finetune", weights_of_another_model("finetune"),
         2, ("backbone parameters of resnet18", "--allow-partial-weights"), absent=("run",)),
    Case("weights of another architecture in conv", weights_of_another_model("conv"),
         2, ("backbone parameters of resnet18", "--allow-partial-weights")),
    Case("a CSV cell holding a NUL", csv_with_bytes(b"data/x\x00.png,vertical\n"), 2, ("NUL character",),
         absent=("run",)),
    Case("a CSV cell over csv's 128k limit", csv_with("a" * 200_000 + ",vertical"), 2,
         ("a line of 200,009 characters",), absent=("run",)),
    Case("a CSV that is not UTF-8", csv_with_bytes(b"data/\xff\xfe.png,vertical\n"), 1, ("cannot read the list",),
         absent=("run",)),
    Case("a CSV row naming a folder", csv_with("data,vertical"), 0,
         ("skipped 1 unreadable image file(s)", "not a regular file (a folder)")),
    Case("every CSV row twice: each image used once", repeated_rows, 0, ("the same image as row",)),
    Case("a class folder whose name is not UTF-8", non_utf8_class, 0, ()),
    Case("symlinks that loop, to a file and to a folder", self_loop, 0, ()),
    Case("a single class trains with a warning", one_class, 0, ("has a single class (only)", "means nothing")),
    Case("a binary --config", binary_config, 2, ("--config", "not a text file"), absent=("run",)),
    Case("--config naming a device", lambda f, m: ["train", "--config", "/dev/zero", *QUICK], 2,
         ("--config", "not a regular file (a character device)")),
    Case("--class-weights naming a folder", lambda f, m: ["train", tree(f / "data"), "--class-weights", f, *QUICK],
         2, ("--class-weights", "not a regular file (a folder)")),
    Case("VQTOOL_CACHE_DIR a file", cache_dir("{image}"), 1, ("VQTOOL_CACHE_DIR=", "Not a directory",
                                                            "--no-cache-store"), absent=("run",)),
    Case("VQTOOL_CACHE_DIR under /proc", cache_dir("/proc/vqtool-cache"), 1,
         ("VQTOOL_CACHE_DIR=/proc/vqtool-cache", "--no-cache-store"), absent=("run",)),
    Case("VQTOOL_CACHE_DIR on a filesystem that refuses folders", cache_dir("/sys/vqtool-cache"), 1,
         ("VQTOOL_CACHE_DIR=/sys/vqtool-cache", "Operation not permitted"), absent=("run",)),
]


def check_outcome(result, case: Case, folder: Path) -> None:
    assert result.exit_code == case.exit_code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    if case.exit_code:
        assert len(errors) == 1, result.stderr
        missing = [fragment for fragment in case.says if fragment not in errors[0]]
    else:
        assert not errors
        missing = [fragment for fragment in case.says if fragment not in result.stderr]
    assert not missing, result.stderr
    for path in case.absent:
        assert not (folder / path).exists(), path


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_hostile_input(case, run_cli, tmp_path, monkeypatch):
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    argv = case.build(tmp_path, monkeypatch)
    check_outcome(run_cli(*argv), case, tmp_path)


def test_a_raised_pixel_limit_reads_a_large_image(run_cli, tmp_path, monkeypatch):
    image = make_class_tree(tmp_path / "t", per_class=1, size=64, splits=()) / "vertical" / "vertical_0.png"
    monkeypatch.setenv("VQTOOL_MAX_IMAGE_PIXELS", "1000")
    assert run_cli("conv", "apply", image, "--kernel", "blur", "-q").exit_code == 2
    monkeypatch.setenv("VQTOOL_MAX_IMAGE_PIXELS", "5000")
    result = run_cli("conv", "apply", image, "--kernel", "blur", "--json", "-q")
    assert result.exit_code == 0 and json.loads(result.stdout)["input_shape"] == [64, 64]


def test_weights_of_another_architecture_load_when_asked(run_cli, tmp_path):
    weights = efficientnet_weights(tmp_path)
    result = run_cli("conv", "summary", "resnet18", "--weights", weights, "--allow-partial-weights", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["layers"]


def test_real_chmod_000_dataset_root(run_cli, tmp_path):
    root = tree(tmp_path / "data")
    root.chmod(0)
    try:
        if os.access(root, os.R_OK):
            pytest.skip("running as root: chmod 000 blocks nothing (test_hostile_input simulates it)")
        check_outcome(run_cli("train", root, *QUICK), Case("", None, 1, ("cannot read the folder",)), tmp_path)
    finally:
        root.chmod(0o755)


# --- dataset trees --------------------------------------------------------------------------------


def test_macos_debris_is_ignored_in_a_flat_tree_as_in_a_split_tree(run_cli, tmp_path):
    for layout in ((), ("train", "val")):
        root = tree(tmp_path / f"data{len(layout)}", splits=layout)
        inner = root / "train" if layout else root
        for folder in (root, inner):
            (folder / "__MACOSX" / "vertical").mkdir(parents=True, exist_ok=True)
            (folder / "__MACOSX" / "vertical" / "._vertical_0.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
            (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (inner / "vertical" / "._vertical_0.png").write_bytes(b"\x00\x05\x16\x07")
        (inner / "vertical" / ".thumbnails").mkdir()
        (inner / "vertical" / ".thumbnails" / "t.png").write_bytes(b"junk")
        result = run_cli("train", root, *QUICK, "--out", f"run{len(layout)}")
        assert result.exit_code == 0 and "unreadable" not in result.stderr, result.output
        meta = json.loads((tmp_path / f"run{len(layout)}" / "model.json").read_text())
        assert meta["classes"] == ["horizontal", "vertical"]


def test_listing_a_tree_opens_no_file(tmp_path, monkeypatch):
    import builtins

    from vqtool.data.images import scan_class_tree

    root = tree(tmp_path / "data", splits=())

    def refuse(*args, **kwargs):
        raise AssertionError("a file was opened while listing")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(Image, "open", refuse)
    classes, files, labels, unreadable = scan_class_tree(root)
    assert classes == ["horizontal", "vertical"] and len(files) == 8 and labels == [0] * 4 + [1] * 4
    assert not unreadable


def test_a_val_only_tree_is_evaluated_as_its_val_split(run_cli, tmp_path):
    assert run_cli("train", tree(tmp_path / "data"), *QUICK, "--out", "run").exit_code == 0
    report = run_cli("eval", "run", tree(tmp_path / "heldout", splits=("val",)), "--json", "-q")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["split"] == "val" and json.loads(report.stdout)["n"] == 8


def test_eval_says_when_it_evaluates_training_images_or_a_whole_folder(run_cli, tmp_path):
    flat = tree(tmp_path / "flat", splits=())
    assert run_cli("train", flat, *QUICK, "--val-split", "0", "--out", "run").exit_code == 0
    own = run_cli("eval", "run", "--json")
    assert own.exit_code == 0 and json.loads(own.stdout)["split"] == "train"
    assert "trained without held-out data (--val-split 0)" in own.stderr and "own training images" in own.stderr
    named = run_cli("eval", "run", flat, "--json")
    assert named.exit_code == 0 and json.loads(named.stdout)["split"] == "all"
    assert "has no val or test split: evaluating all 8 of its images" in named.stderr


def test_a_class_unreadable_only_in_eval_data_is_a_warning(run_cli, tmp_path):
    assert run_cli("train", tree(tmp_path / "data"), *QUICK, "--out", "run").exit_code == 0
    heldout = tree(tmp_path / "heldout", splits=())
    for image in (heldout / "vertical").iterdir():
        image.write_bytes(b"")
    result = run_cli("eval", "run", heldout, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["n"] == 4
    assert "class vertical has no readable image in the data" in result.stderr


# --- detector data --------------------------------------------------------------------------------

LABEL_CASES = [  # (label file text, what is wrong, or None)
    ("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.05 0.05\n", None),
    ("", None),  # background image
    ("0 0.5 0.5 0.2 0.2 0.9\n", "rows must have 5 values"),
    ("0 0.5 0.5 0.2\n", "rows must have 5 values"),
    ("0 0.5 0.5 0.2 0.2\n1 0.5 0.5\n", "not rows of numbers"),
    ("zero 0.5 0.5 0.2 0.2\n", "not rows of numbers"),
    ("2 0.5 0.5 0.2 0.2\n", "class 2 is not among the 2 classes"),
    ("0.5 0.5 0.5 0.2 0.2\n", "whole numbers"),
    ("0 50 50 20 20\n", "normalised"),
    ("0 nan 0.5 0.2 0.2\n", "normalised"),
    ("0 0.5 0.5 -0.2 0.2\n", "negative"),
    ("0 0.1 0.1 0.9 0.1 0.9 0.9 0.1 0.9\n", None),  # a polygon
    ("0 0.1 0.1 0.9 0.1 0.9 0.9 0.1\n", "not rows of numbers"),  # odd number of coordinates
    ("0 0.1 0.1 0.9 0.1 0.9 0.9 0.1 0.9\n1 0.5 0.5 0.2 0.2\n", "mixed"),
]


@pytest.mark.parametrize("text, problem", LABEL_CASES, ids=[repr(text)[:40] for text, _ in LABEL_CASES])
def test_label_files_are_judged_as_ultralytics_judges_them(text, problem, tmp_path, monkeypatch):
    from vqtool.detection.data import label_problem
    from vqtool.detection.ultralytics_env import load_ultralytics

    path = tmp_path / "label.txt"
    path.write_text(text)
    found = label_problem(str(path), num_classes=2)
    assert (found is None) if problem is None else (problem in found), found
    monkeypatch.setenv("VQTOOL_HOME", str(tmp_path / "home"))
    load_ultralytics()
    from ultralytics.data.utils import verify_image_label

    Image.new("RGB", (16, 16)).save(tmp_path / "image.png")
    corrupt = verify_image_label((str(tmp_path / "image.png"), str(path), "", False, 2, 0, 0, False))[8]
    assert corrupt == (problem is not None)  # Ultralytics drops exactly the images vqtool names


def test_label_file_that_is_not_utf8(tmp_path):
    from vqtool.detection.data import label_problem

    (tmp_path / "label.txt").write_bytes(b"\xff\xfe0 0.5")
    assert "cannot read it" in label_problem(str(tmp_path / "label.txt"), num_classes=2)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """An untrained two-class YOLOv8n checkpoint (classes red, blue), saved as Ultralytics saves one."""
    home = tmp_path_factory.mktemp("vqtool-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VQTOOL_HOME", str(home))
        from vqtool.detection.ultralytics_env import keeping_threads, load_ultralytics

        ultralytics = load_ultralytics()  # before any Ultralytics import: offline, settings in VQTOOL_HOME
        from ultralytics.nn.tasks import DetectionModel

        with keeping_threads():
            model = ultralytics.YOLO("yolov8n.yaml")
            model.model = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
            model.model.names = {0: "red", 1: "blue"}
            path = home / "detector.pt"
            model.save(str(path))
    return path


@pytest.fixture
def shapes(tmp_path, monkeypatch, detector):
    from test_detect import make_yolo_dataset

    monkeypatch.setenv("VQTOOL_HOME", str(detector.parent))
    return make_yolo_dataset(tmp_path / "shapes", train=4, val=4)


def test_detector_eval_names_the_images_it_leaves_out(run_cli, detector, shapes):
    labels = shapes.parent / "labels" / "val"
    (labels / "0.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    (labels / "1.txt").write_text("0 0.5 0.5 0.2\n")
    result = run_cli("eval", detector, shapes, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 2
    assert "skipped 2 of 4 val images with invalid labels" in result.stderr
    assert "0.png" in result.stderr and "class 7" in result.stderr and "1.png" in result.stderr


def test_detector_training_on_labels_all_invalid_is_one_line_and_no_run_folder(run_cli, shapes, tmp_path):
    for label in (shapes.parent / "labels" / "train").iterdir():
        label.write_text("0 5 5 2 2\n")
    result = run_cli("train", shapes, "--epochs", "1", "--imgsz", "64", "--out", "run")
    check_outcome(result, Case("", None, 1, ("none of the 4 train images can be used", "normalised"),
                               absent=("run",)), tmp_path)


def test_detector_confusion_on_a_data_yaml_of_other_names(run_cli, detector, shapes, tmp_path):
    shapes.write_text(shapes.read_text().replace("red", "cat").replace("blue", "dog"))
    result = run_cli("confusion", detector, shapes)
    check_outcome(result, Case("", None, 2, ("classes (red, blue) differ", "(cat, dog)")), tmp_path)
    evaluated = run_cli("eval", detector, shapes, "--json")
    assert evaluated.exit_code == 0 and "differ" in evaluated.stderr


def test_a_truncated_jpeg_in_a_detection_dataset_is_refused_and_left_as_it_was(run_cli, detector, shapes, tmp_path):
    from PIL import Image

    image = shapes.parent / "images" / "val" / "0.jpg"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image, "JPEG")
    (shapes.parent / "images" / "val" / "0.png").unlink()
    truncated = image.read_bytes()[:-2]  # decodable, but without the end-of-image marker
    image.write_bytes(truncated)
    result = run_cli("eval", detector, shapes)
    check_outcome(result, Case("", None, 1, ("1 val JPEG file(s) lack their end marker", "0.jpg",
                                             "rewrite them in place")), tmp_path)
    assert image.read_bytes() == truncated


def test_library_noise_about_a_damaged_jpeg_stays_off_stderr(run_cli, detector, tmp_path, capfd):
    image = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image, quality=90)
    data = image.read_bytes()
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(data[:len(data) // 2] + b"\xff\xd9")  # libjpeg decodes it, complaining on fd 2
    result = run_cli("detect", damaged, "-w", detector, "--imgsz", "64", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(damaged)
    assert "Corrupt JPEG" not in capfd.readouterr().err
    run_cli("--debug", "detect", damaged, "-w", detector, "--imgsz", "64", "-q")
    assert "Corrupt JPEG" in capfd.readouterr().err  # --debug shows what the libraries say


@pytest.mark.parametrize("names, says", [
    ({}, "class names are missing or empty"),
    ([], "class names are missing or empty"),
    ({0: "", 1: "blue"}, "not a name for each class number 0..1"),
    ({0: "red", 5: "blue"}, "not a name for each class number 0..1"),
], ids=["an empty mapping", "an empty list", "an empty name", "numbers with a gap"])
def test_a_detector_checkpoint_without_class_names_is_one_line(run_cli, detector, shapes, tmp_path, names, says):
    import torch

    checkpoint = torch.load(detector, weights_only=False)  # the test's own file
    checkpoint["model"].names = names
    broken = tmp_path / "broken.pt"
    torch.save(checkpoint, broken)
    image = next((shapes.parent / "images").rglob("*.png"))
    for command in (["detect", image, "-w", broken], ["eval", broken, shapes]):
        result = run_cli(*command)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert result.stderr.startswith("Error: ") and says in result.stderr and result.stderr.count("\n") == 1
