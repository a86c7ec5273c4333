"""vqtool export: classifiers to ONNX and TorchScript, YOLO detectors through Ultralytics, each verified.

Checkpoints come from `vqtool train` on the tiny striped-images tree; the
detector is Ultralytics' yolov8n.yaml built in place, so nothing is downloaded.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import make_class_tree, summary_of

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("torchscript", ".ts")])
def test_export_verifies_and_evaluates_like_the_checkpoint(run_cli, trained, tmp_path, fmt, suffix):
    run, data = trained
    summary = summary_of(run_cli("export", run, "--format", fmt, "-o", tmp_path / f"model{suffix}", "--json", "-q"))
    assert summary["verified"] and summary["max_abs_diff"] <= 1e-4 and summary["top1_agreement"] == 1.0
    assert [c["batch"] for c in summary["checks"]] == ["random", "sample"]  # the checkpoint's own val split
    exported = summary_of(run_cli("eval", summary["file"], data, "--json", "-q"))
    original = summary_of(run_cli("eval", run, data, "--json", "-q"))
    assert exported["top1"] == original["top1"] and exported["per_class"] == original["per_class"]
    assert exported["loss"] == pytest.approx(original["loss"], abs=1e-5)
    confusion = run_cli("confusion", summary["file"], data, "--json", "-q")
    assert confusion.exit_code == 0, confusion.output


def test_onnx_carries_class_names_and_preprocessing(run_cli, trained):
    from vqtool.classification.checkpoints.export_format import read_metadata

    run, _ = trained
    summary = summary_of(run_cli("export", run, "--json", "-q"))
    assert summary["file"] == str(run / "model.onnx")  # beside the checkpoint by default
    document = read_metadata(summary["file"])
    checkpoint = json.loads((run / "model.json").read_text())
    assert document["classes"] == ["horizontal", "vertical"] == checkpoint["classes"]
    assert document["preprocess"] == checkpoint["preprocess"] and document["preprocess"]["size"] == 28
    assert document["input"]["shape"][0] == "batch" and document["output"]["kind"] == "logits"


def test_static_export_has_a_fixed_batch_and_eval_still_works(run_cli, trained, tmp_path):
    import onnxruntime

    run, data = trained
    summary = summary_of(run_cli("export", run, "--static", "-o", tmp_path / "static.onnx", "--json", "-q"))
    assert summary["batch"] == 1 and summary["verified"]
    session = onnxruntime.InferenceSession(summary["file"], providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == 1
    assert summary_of(run_cli("eval", summary["file"], data, "--json", "-q"))["n"] == 24  # fed one at a time


def test_half_passes_its_own_tolerance_and_fails_a_strict_one(run_cli, trained, tmp_path):
    run, _ = trained
    half = summary_of(run_cli("export", run, "--half", "-o", tmp_path / "half.onnx", "--json", "-q"))
    assert half["precision"] == "float16" and half["tolerance"] == 5e-2 and half["verified"]
    strict = run_cli("export", run, "--half", "-o", tmp_path / "strict.onnx", "--tolerance", "1e-7", "--json")
    assert strict.exit_code == 1 and "beyond the tolerance" in strict.stderr
    assert json.loads(strict.stdout)["verified"] is False  # the summary is printed all the same
    assert (tmp_path / "strict.onnx").is_file()


def test_no_verify_skips_the_check(run_cli, trained, tmp_path):
    run, _ = trained
    summary = summary_of(run_cli("export", run, "--no-verify", "-o", tmp_path / "m.onnx", "--json", "-q"))
    assert "verified" not in summary


@pytest.mark.parametrize("args, message", [
    (["--format", "tflite"], "exports to onnx, torchscript or openvino"),
    (["--format", "torchscript", "--opset", "17"], "--opset applies to ONNX"),
    (["-o", "model.txt"], "must end in .onnx"),
])
def test_bad_options_are_usage_errors(run_cli, trained, args, message):
    run, _ = trained
    result = run_cli("export", run, *args)
    assert result.exit_code == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")


def test_what_is_not_a_checkpoint_is_a_usage_error(run_cli, trained, tmp_path):
    run, data = trained
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    summary_of(run_cli("export", run, "-o", tmp_path / "model.onnx", "--no-verify", "--json", "-q"))
    for target in (data, tmp_path / "junk.pt", tmp_path / "missing", tmp_path / "model.onnx"):
        result = run_cli("export", target)
        assert result.exit_code == 2 and result.stderr.startswith("Error: "), (target, result.output)


def test_missing_onnx_package_is_one_line(run_cli, trained, tmp_path, monkeypatch):
    run, _ = trained
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    result = run_cli("export", run, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 1 and "needs the onnx package" in result.stderr and "pip install" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet18", "timm/tf_efficientnet_lite0"])
def test_acceptance_models_export_with_dynamic_batch(run_cli, tmp_path, model):
    data = make_class_tree(tmp_path / "stripes", per_class=8, size=64)
    trained = run_cli("train", data, "--model", model, "--epochs", "1", "--imgsz", "64", "--out", tmp_path / "run",
                      "--json", "-q")
    assert trained.exit_code == 0, trained.output
    summary = summary_of(run_cli("export", tmp_path / "run", "--json", "-q"))
    assert summary["batch"] == "dynamic" and summary["verified"] and summary["max_abs_diff"] <= 1e-4
    exported = summary_of(run_cli("eval", summary["file"], data, "--json", "-q"))
    assert exported["top1"] == summary_of(run_cli("eval", tmp_path / "run", data, "--json", "-q"))["top1"]


# --- YOLO -----------------------------------------------------------------------------------------


@pytest.fixture
def detector(tmp_path, monkeypatch) -> Path:
    """yolov8n.yaml with random weights, saved as a .pt, in a temporary vqtool home.

    An untrained head's class scores hardly vary (its features are tiny), so none passes conf 0.25; scaled-up
    class weights give a few dozen boxes of distinct confidences on Ultralytics' sample images to compare.
    """
    import torch

    from vqtool.detection.ultralytics_env import load_ultralytics

    monkeypatch.setenv("VQTOOL_HOME", str(tmp_path / "vqtool-home"))
    torch.manual_seed(0)
    yolo = load_ultralytics().YOLO("yolov8n.yaml")
    for branch in yolo.model.model[-1].cv3:
        branch[-1].weight.data.normal_(0, 3e4)
        branch[-1].bias.data.fill_(-1.4)
    weights = tmp_path / "weights" / "tiny.pt"
    weights.parent.mkdir()
    torch.save({"model": yolo.model}, weights)  # in fp32: YOLO.save() halves it, rounding those features to 0
    return weights


def test_yolo_exports_to_onnx_beside_the_weights_verified_box_for_box(run_cli, detector, tmp_path):
    summary = summary_of(run_cli("export", detector, "--imgsz", "128", "--json", "-q"))
    assert summary["file"] == str(detector.with_suffix(".onnx")) and summary["task"] == "detect"
    assert summary["verified"] and summary["verify_images"] == 2  # bus.jpg and zidane.jpg
    assert summary["detections"] == summary["matched"] == summary["exported_detections"] > 0
    assert summary["box_max_abs_diff"] <= 0.05
    assert sorted(p.name for p in detector.parent.iterdir()) == ["tiny.onnx", "tiny.pt"]  # no scratch left
    assert list(tmp_path.glob("**/runs")) == []
    from ultralytics.utils import ASSETS

    detections = run_cli("detect", ASSETS / "bus.jpg", "-w", summary["file"], "--imgsz", "128", "--json", "-q")
    assert detections.exit_code == 0 and json.loads(detections.stdout)["detections"], detections.output
    strict = run_cli("export", detector, "--imgsz", "128", "--static", "--tolerance", "0", "--overwrite", "--json")
    assert strict.exit_code == 1 and "beyond the tolerance" in strict.stderr
    assert json.loads(strict.stdout)["batch"] == 1


def test_yolo_format_errors_are_one_line(run_cli, detector, tmp_path):
    bad = run_cli("export", detector, "--format", "onnxx")
    assert bad.exit_code == 2 and "did you mean: onnx" in bad.stderr
    wrong_name = run_cli("export", detector, "-o", tmp_path / "model.ts")
    assert wrong_name.exit_code == 2 and "must end in .onnx" in wrong_name.stderr
    if importlib.util.find_spec("openvino") is None:
        missing = run_cli("export", detector, "--format", "openvino")
        assert missing.exit_code == 1 and "needs the openvino package" in missing.stderr
        assert missing.stderr.count("\n") == 1 and not list(detector.parent.glob("*openvino*"))
