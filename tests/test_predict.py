"""vqtool predict: sources, formats, top-k, sorting, TTA, Grad-CAM, exports, eval agreement, pipes."""

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_class_tree, summary_of

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stripes_run(tmp_path_factory):
    """A tiny classifier of horizontal vs vertical stripes, its data, and its exports."""
    from click.testing import CliRunner

    from vqtool.cli import cli

    root = tmp_path_factory.mktemp("predict")
    tree = make_class_tree(root / "stripes", per_class=8, size=24)
    run = root / "run"
    invoke = lambda *args: CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)  # noqa: E731
    result = invoke("train", tree, "--model", "cnn-bn", "--imgsz", "24", "--epochs", "2", "-q", "--json",
                    "--out", run)
    assert result.exit_code == 0, result.output
    for suffix, fmt in ((".onnx", "onnx"), (".ts", "torchscript")):
        exported = invoke("export", run, "--format", fmt, "-o", root / f"model{suffix}", "-q", "--json")
        assert exported.exit_code == 0, exported.output
    return run, tree, root


def records_of(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_jsonl_records_have_the_documented_keys_and_follow_input_order(run_cli, stripes_run):
    run, tree, _ = stripes_run
    records = records_of(run_cli("predict", tree / "val", "-w", run))
    expected = sorted(str(p) for p in (tree / "val").rglob("*.png"))
    assert [r["path"] for r in records] == expected
    for record in records:
        assert list(record) == ["path", "width", "height", "class", "confidence", "top"]
        assert (record["width"], record["height"]) == (24, 24)
        assert len(record["top"]) == 2  # --top-k 5 clamps to the 2 classes
        assert record["class"] == record["top"][0]["class"] and record["confidence"] == record["top"][0]["confidence"]
        assert abs(sum(t["confidence"] for t in record["top"]) - 1) < 1e-5
        assert {t["class"]: t["class_id"] for t in record["top"]} == {"horizontal": 0, "vertical": 1}


def test_top1_from_predict_equals_eval_exactly(run_cli, stripes_run, tmp_path):
    run, tree, _ = stripes_run
    records = records_of(run_cli("predict", tree / "val", "-w", run))
    correct = sum(Path(r["path"]).parent.name == r["class"] for r in records)
    report = summary_of(run_cli("eval", run, "--json", "-q", "--predictions", tmp_path / "rows.jsonl"))
    assert report["n"] == len(records) and correct / len(records) == report["top1"]
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    by_path = {r["path"]: r for r in records}
    for row in rows:  # the same image, class and confidence
        record = by_path[row["path"]]
        assert row["true"] == Path(row["path"]).parent.name
        assert (row["class"], row["top"]) == (record["class"], record["top"])


def test_eval_predictions_csv_and_refusals(run_cli, stripes_run, tmp_path):
    run, _, _ = stripes_run
    assert run_cli("eval", run, "-q", "--predictions", tmp_path / "rows.csv").exit_code == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "rows.csv").read_text())))
    assert len(rows) == 16 and set(rows[0]) == {"path", "true", "class", "confidence", "top1_class",
                                                "top1_confidence", "top2_class", "top2_confidence"}
    before = sha(tmp_path / "rows.csv")
    again = run_cli("eval", run, "-q", "--predictions", tmp_path / "rows.csv")
    assert again.exit_code == 2 and "already exists" in again.stderr and sha(tmp_path / "rows.csv") == before
    wrong = run_cli("eval", run, "-q", "--predictions", tmp_path / "rows.txt")
    assert wrong.exit_code == 2 and ".csv or .jsonl" in wrong.stderr


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to mount a read-only filesystem")
def test_eval_predictions_on_a_read_only_filesystem_is_one_line(stripes_run, tmp_path):
    """The temporary file's cleanup must not fail where nothing could be written (unlink says EROFS there)."""
    run, _, _ = stripes_run
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    script = (f"mount -t tmpfs -o ro tmpfs '{readonly}' || exit 99; "
              f"exec '{sys.executable}' -m vqtool eval '{run}' -q --predictions '{readonly}/rows.csv'")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode == 99 or "unshare:" in result.stderr:
        pytest.skip(f"no read-only mount here ({result.stderr.strip()[:80]})")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"Error: {readonly}/rows.csv: cannot write it (Read-only file system)")


def test_every_source_kind(run_cli, stripes_run, tmp_path):
    run, tree, _ = stripes_run
    first = tree / "val" / "horizontal" / "horizontal_0.png"
    mac = tree / "val" / "__MACOSX"  # junk beside real images is never read
    mac.mkdir(exist_ok=True)
    shutil.copy(first, mac / "horizontal_0.png")
    shutil.copy(first, tree / "val" / "horizontal" / "._horizontal_0.png")
    (tree / "val" / ".DS_Store").write_bytes(b"\0\1")
    try:
        folder = records_of(run_cli("predict", tree / "val", "-w", run))
        assert len(folder) == 16 and not any("MACOSX" in r["path"] or "/._" in r["path"] for r in folder)
        single = records_of(run_cli("predict", first, "-w", run))
        globbed = records_of(run_cli("predict", str(tree / "val" / "*" / "vertical_*.png"), "-w", run))
        stdin = records_of(run_cli("predict", "-", "-w", run, input=f"{first}\n\n{tree / 'val' / 'vertical'}\n"))
    finally:
        shutil.rmtree(mac)
        (tree / "val" / "horizontal" / "._horizontal_0.png").unlink()
        (tree / "val" / ".DS_Store").unlink()
    assert [r["path"] for r in single] == [str(first)]
    assert len(globbed) == 8 and all("vertical_" in r["path"] for r in globbed)
    assert [r["path"] for r in stdin][:1] == [str(first)] and len(stdin) == 9
    assert single[0]["top"] == next(r["top"] for r in folder if r["path"] == str(first))


def test_video_frames_with_stride(run_cli, stripes_run, tmp_path):
    import cv2

    run, _, _ = stripes_run
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (32, 24))
    for i in range(7):
        writer.write(np.full((24, 32, 3), 30 * i, np.uint8))
    writer.release()
    records = records_of(run_cli("predict", video, "-w", run, "--vid-stride", "3", "--cam", tmp_path / "cams"))
    assert [r["frame"] for r in records] == [2, 5]
    assert all(r["path"] == str(video) and (r["width"], r["height"]) == (32, 24) for r in records)
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == ["clip_2_cam.png", "clip_5_cam.png"]


def test_unreadable_inputs_are_reported_skipped_and_exit_1(run_cli, stripes_run, tmp_path):
    run, tree, _ = stripes_run
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    good = tree / "val" / "vertical" / "vertical_0.png"
    result = run_cli("predict", tmp_path / "broken.jpg", tmp_path / "missing.png", good, "-w", run,
                     input=None)
    assert result.exit_code == 1
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [str(good)]
    assert "broken.jpg: cannot read the image" in result.stderr and "missing.png: no such file" in result.stderr
    nul = run_cli("predict", "-", "-w", run, input=f"bad\0name.png\n{good}\n")
    assert nul.exit_code == 1 and "NUL byte" in nul.stderr and len(nul.stdout.splitlines()) == 1


def test_csv_and_table_formats_and_summary(run_cli, stripes_run):
    run, tree, _ = stripes_run
    result = run_cli("predict", tree / "val", "-w", run, "--format", "csv", "--top-k", "1")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert result.exit_code == 0 and len(rows) == 16
    assert list(rows[0]) == ["path", "frame", "width", "height", "class", "confidence", "top1_class",
                             "top1_confidence"]
    records = records_of(run_cli("predict", tree / "val", "-w", run))
    assert [(r["class"], float(r["confidence"])) for r in rows] == [(r["class"], r["confidence"]) for r in records]
    table = run_cli("predict", tree / "val", "-w", run, "--format", "table")
    lines = table.stdout.splitlines()
    assert len(lines) == 17 and lines[0].split()[:2] == ["class", "conf"] and str(tree) in lines[1]
    counts = {c: sum(r["class"] == c for r in records) for c in ("horizontal", "vertical")}
    assert "16 images:" in table.stderr and "ms per image" in table.stderr and "mean confidence" in table.stderr
    assert all(f"{name} {count}" in table.stderr for name, count in counts.items() if count)


def test_top_k_larger_than_the_classes_clamps(run_cli, stripes_run):
    run, tree, _ = stripes_run
    first = tree / "val" / "horizontal" / "horizontal_0.png"
    (record,) = records_of(run_cli("predict", first, "-w", run, "--top-k", "50"))
    assert len(record["top"]) == 2
    header = run_cli("predict", first, "-w", run, "--top-k", "50", "--format", "csv").stdout.splitlines()[0]
    assert header.endswith("top2_class,top2_confidence")


def test_sort_into_copies_keeps_clashes_and_leaves_originals(run_cli, stripes_run, tmp_path):
    run, tree, _ = stripes_run
    originals = {p: sha(p) for p in (tree / "val").rglob("*.png")}
    twin = tmp_path / "elsewhere" / "horizontal_0.png"  # the same name as an image in the folder
    twin.parent.mkdir()
    twin.write_bytes((tree / "val" / "vertical" / "vertical_3.png").read_bytes())
    result = run_cli("predict", tree / "val", twin, "-w", run, "--sort-into", tmp_path / "sorted")
    records = records_of(result)
    counts = {name: sum(r["class"] == name for r in records) for name in ("horizontal", "vertical")}
    assert (f"--sort-into: 17 images put into {tmp_path / 'sorted'} (horizontal {counts['horizontal']}, "
            f"vertical {counts['vertical']})") in result.stderr
    assert all(Path(r["sorted_to"]).parent == tmp_path / "sorted" / r["class"] for r in records)
    assert {p: sha(p) for p in (tree / "val").rglob("*.png")} == originals
    sorted_files = sorted((tmp_path / "sorted").rglob("*.png"))
    assert len(sorted_files) == 17
    for record in records:  # every image is in its class folder, byte for byte
        folder = tmp_path / "sorted" / record["class"]
        assert any(sha(f) == sha(record["path"]) for f in folder.iterdir())
    names = [f.name for f in sorted_files]
    assert names.count("horizontal_0.png") + names.count("horizontal_0_1.png") == 2
    records_of(run_cli("predict", twin, "-w", run, "--sort-into", tmp_path / "sorted"))  # a second run adds
    assert len(list((tmp_path / "sorted").rglob("*.png"))) == 18
    inside = run_cli("predict", tree / "val", "-w", run, "--sort-into", tree / "val" / "out")
    assert inside.exit_code == 2 and "which is read" in inside.stderr


def test_min_confidence_sends_doubtful_images_to_uncertain_and_link(run_cli, stripes_run, tmp_path):
    run, tree, _ = stripes_run
    records = records_of(run_cli("predict", tree / "val", "-w", run))
    threshold = float(np.median([r["confidence"] for r in records]))
    records_of(run_cli("predict", tree / "val", "-w", run, "--sort-into", tmp_path / "s", "--min-confidence",
                       threshold, "--link"))
    uncertain = {f.name for f in (tmp_path / "s" / "_uncertain").iterdir()}
    assert uncertain == {Path(r["path"]).name for r in records if r["confidence"] < threshold}
    placed = [f for f in (tmp_path / "s").rglob("*.png")]
    assert len(placed) == 16 and all(os.stat(f).st_ino == os.stat(tree / "val" / f.stem.split("_")[0] / f.name)
                                     .st_ino for f in placed)
    alone = run_cli("predict", tree / "val", "-w", run, "--min-confidence", "0.5")
    assert alone.exit_code == 2 and "--sort-into" in alone.stderr


def test_tta_is_the_average_over_the_image_and_its_mirror(run_cli, stripes_run, tmp_path):
    from vqtool.classification.checkpoints.format import load_checkpoint
    from vqtool.data.images import load_image, pillow_limits

    run, tree, _ = stripes_run
    image = tree / "val" / "vertical" / "vertical_2.png"
    (record,) = records_of(run_cli("predict", image, "-w", run, "--tta"))
    checkpoint = load_checkpoint(run)
    p = checkpoint.preprocess
    with pillow_limits():
        pixels = load_image(str(image), p.size, p.channels, p.resize, p.interpolation)
    x = (pixels.float().div(255)[None] - torch.tensor(p.mean).view(1, -1, 1, 1)) / torch.tensor(p.std).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = (checkpoint.model(x).softmax(1) + checkpoint.model(x.flip(-1)).softmax(1))[0] / 2
    assert {t["class_id"]: t["confidence"] for t in record["top"]} == pytest.approx(dict(enumerate(expected.tolist())),
                                                                                  abs=1e-5)
    (plain,) = records_of(run_cli("predict", image, "-w", run))
    assert plain["top"] != record["top"]


def test_tta_is_refused_where_training_never_mirrors(run_cli, stripes_run, tmp_path):
    run, tree, _ = stripes_run
    copy = tmp_path / "digits-like"
    shutil.copytree(run, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["dataset"]["flips"] = False
    (copy / "model.json").write_text(json.dumps(meta))
    result = run_cli("predict", tree / "val", "-w", copy, "--tta")
    assert result.exit_code == 2 and "--tta" in result.stderr and result.stdout == ""


def square_image(seed: int, square_at: tuple[int, int] | None, size: int = 64) -> Image.Image:
    """Dark noise, with a bright 20 px square whose top-left corner is ``square_at`` (None: no square)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 60, (size, size), dtype=np.uint8)
    if square_at is not None:
        top, left = square_at
        array[top:top + 20, left:left + 20] = 240
    return Image.fromarray(np.stack([array] * 3, axis=-1))


@pytest.mark.slow  # trains a 64 px model: about 20 s here
def test_grad_cam_peaks_inside_the_square_that_decides_the_class(run_cli, tmp_path):
    from vqtool.classification.inference.cam import GradCam
    from vqtool.classification.inference.evaluate import load_classifier
    from vqtool.data.images import load_image, pillow_limits

    rng = np.random.default_rng(0)
    for kind in ("square", "plain"):
        (tmp_path / "squares" / kind).mkdir(parents=True)
        for seed in range(12):  # the class is whether there is a square, wherever it is
            where = tuple(int(v) for v in rng.integers(0, 44, 2)) if kind == "square" else None
            square_image(seed, where).save(tmp_path / "squares" / kind / f"{seed}.png")
    trained = run_cli("train", tmp_path / "squares", "--model", "cnn-bn", "--imgsz", "64", "--epochs", "3",
                      "-q", "--out", tmp_path / "run")
    assert trained.exit_code == 0, trained.output
    probe = tmp_path / "probe.png"
    square_image(99, (22, 22)).save(probe)  # the square covers rows and columns 22..41
    classifier = load_classifier(str(tmp_path / "run"))
    cam = GradCam(classifier, None, torch.device("cpu"))
    assert cam.layer_name == "features"  # the last stage that keeps a spatial map
    with pillow_limits():
        pixels = load_image(str(probe), 64, 3)
    (heatmap,) = cam.heatmaps(pixels[None], [classifier.classes.index("square")])
    row, col = np.unravel_index(heatmap.argmax(), heatmap.shape)
    assert 22 <= row < 42 and 22 <= col < 42, (row, col)
    result = run_cli("predict", probe, "-w", tmp_path / "run", "--cam", tmp_path / "cams")
    assert result.exit_code == 0
    assert Image.open(tmp_path / "cams" / "probe_cam.png").size[0] > 200
    records_of(run_cli("predict", probe, "-w", tmp_path / "run", "--cam", tmp_path / "cams"))
    assert (tmp_path / "cams" / "probe_cam_1.png").is_file()  # never over the first figure


def test_cam_writes_one_figure_per_image(run_cli, stripes_run, tmp_path):
    run, tree, _ = stripes_run
    result = run_cli("predict", tree / "val", "-w", run, "--cam", tmp_path / "cams", "--batch-size", "5")
    records = records_of(result)
    figures = sorted(p.relative_to(tmp_path / "cams") for p in (tmp_path / "cams").rglob("*.png"))
    assert figures == sorted(Path(c) / f"{c}_{i}_cam.png" for c in ("horizontal", "vertical") for i in range(8))
    assert f"--cam: 16 Grad-CAM figures written into {tmp_path / 'cams'}" in result.stderr
    assert sorted(Path(r["cam"]).relative_to(tmp_path / "cams") for r in records) == figures


def test_cam_is_refused_for_exports_and_unknown_layers(run_cli, stripes_run):
    run, tree, root = stripes_run
    exported = run_cli("predict", tree / "val", "-w", root / "model.onnx", "--cam", "cams")
    assert exported.exit_code == 2 and "torch checkpoint" in exported.stderr
    unknown = run_cli("predict", tree / "val", "-w", run, "--cam", "cams", "--cam-layer", "featurez")
    assert unknown.exit_code == 2 and "did you mean: features" in unknown.stderr


def test_onnx_and_torchscript_exports_give_the_same_answers(run_cli, stripes_run):
    run, tree, root = stripes_run
    reference = records_of(run_cli("predict", tree / "val", "-w", run))
    for exported in (root / "model.onnx", root / "model.ts"):
        records = records_of(run_cli("predict", tree / "val", "-w", exported))
        assert [r["class"] for r in records] == [r["class"] for r in reference]
        for mine, theirs in zip(records, reference):
            assert mine["confidence"] == pytest.approx(theirs["confidence"], abs=1e-4)


def test_detectors_and_classifiers_point_at_each_other(run_cli, stripes_run, tmp_path):
    from vqtool.detection.ultralytics_env import load_ultralytics

    run, tree, _ = stripes_run
    ultralytics = load_ultralytics()
    detector = ultralytics.YOLO("yolov8n.yaml")
    detector.save(str(tmp_path / "det.pt"))
    refused = run_cli("predict", tree / "val", "-w", tmp_path / "det.pt")
    assert refused.exit_code == 2 and "vqtool detect" in refused.stderr and len(refused.stderr.splitlines()) == 1
    for classifier in (run, run / "model.safetensors"):
        wrong = run_cli("detect", tree / "val", "-w", classifier)
        assert wrong.exit_code == 2 and "vqtool predict" in wrong.stderr and len(wrong.stderr.splitlines()) == 1


def test_ultralytics_classification_weights_agree_with_ultralytics(run_cli, stripes_run, tmp_path):
    from ultralytics.nn.tasks import ClassificationModel

    from vqtool.detection.ultralytics_env import keeping_threads, load_ultralytics

    run, tree, _ = stripes_run
    ultralytics = load_ultralytics()
    yolo = ultralytics.YOLO("yolov8n-cls.yaml")
    yolo.model = ClassificationModel("yolov8n-cls.yaml", nc=2, verbose=False)
    yolo.model.names, yolo.model.task = {0: "horizontal", 1: "vertical"}, "classify"
    yolo.model.args = {"imgsz": 32, "fliplr": 0.5, "task": "classify"}
    yolo.save(str(tmp_path / "cls.pt"))
    records = records_of(run_cli("predict", tree / "val" / "vertical", "-w", tmp_path / "cls.pt"))
    with keeping_threads():
        theirs = ultralytics.YOLO(str(tmp_path / "cls.pt")).predict([r["path"] for r in records], imgsz=32,
                                                                     verbose=False)
    for record, result in zip(records, theirs):
        probabilities = result.probs.data.tolist()
        assert {t["class_id"]: t["confidence"] for t in record["top"]} == pytest.approx(
            dict(enumerate(probabilities)), abs=1e-4)
    detect = run_cli("detect", tree / "val", "-w", tmp_path / "cls.pt")
    assert detect.exit_code == 2 and "vqtool predict" in detect.stderr


def test_a_closed_pipe_ends_quietly_with_exit_0(stripes_run):
    run, tree, _ = stripes_run
    # ~320 records, more than a pipe holds: predict is still writing when head has gone
    command = (f"set -o pipefail; {sys.executable} -m vqtool predict {' '.join([str(tree / 'val')] * 20)} "
               f"-w {run} --batch-size 4 | head -1")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.splitlines()) == 1 and json.loads(result.stdout)["path"]
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_decoding_runs_a_bounded_way_ahead_of_the_model(stripes_run):
    from concurrent.futures import ThreadPoolExecutor

    from vqtool.classification.checkpoints.format import load_checkpoint
    from vqtool.classification.inference.predict import _decoded
    from vqtool.data.inputs import Input

    run, tree, _ = stripes_run
    files = sorted((tree / "val").rglob("*.png"))
    consumed = []

    def inputs():  # an endless stream, as stdin can be
        while True:
            path = str(files[len(consumed) % len(files)])
            consumed.append(path)
            yield Input(path, Path(path).name)

    with ThreadPoolExecutor(2) as pool:
        stream = _decoded(inputs(), load_checkpoint(run).preprocess, pool, ahead=8, vid_stride=1)
        first = [next(stream) for _ in range(20)]
        stream.close()
    assert [f.input.path for f in first] == consumed[:20]  # in input order
    assert len(consumed) <= 20 + 8 + 1  # never more than `ahead` decoded and waiting


def test_grad_cam_agrees_with_pytorch_grad_cam(stripes_run):
    """vqtool's own Grad-CAM gives pytorch-grad-cam's GradCAM maps (where that package is installed)."""
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from vqtool.classification.inference.cam import GradCam
    from vqtool.classification.inference.evaluate import load_classifier

    run, tree, _ = stripes_run
    classifier = load_classifier(str(run))
    cam = GradCam(classifier, None, torch.device("cpu"))
    images = torch.stack([torch.from_numpy(np.array(Image.open(path).convert("RGB").resize(
        (classifier.preprocess.size,) * 2))).permute(2, 0, 1) for path in sorted((tree / "val").rglob("*.png"))[:6]])
    classes = [0, 1, 0, 1, 1, 0]
    ours = cam.heatmaps(images, classes)
    with grad_cam.GradCAM(model=classifier.model, target_layers=[cam.layer]) as reference:
        theirs = reference(input_tensor=cam.normalize(images), targets=[ClassifierOutputTarget(c) for c in classes])
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 0.02  # bilinear resizing: OpenCV's against torch's
    assert all(p.requires_grad for p in classifier.model.parameters())  # left as it was
