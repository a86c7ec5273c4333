"""OpenVINO IR and int8 exports of classifiers: verified, loaded like any export, refused when tampered with.

The checkpoint is test_export's one-epoch smallcnn on the striped images; the
int8 exports are calibrated on its training images and judged on its val split.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import summary_of

pytest.importorskip("onnxruntime")
openvino = pytest.importorskip("openvino")


def one_error_line(result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr, result.stderr


def test_openvino_ir_folder_is_verified_and_evaluates_like_the_checkpoint(run_cli, trained, tmp_path):
    run, data = trained
    summary = summary_of(run_cli("export", run, "--format", "openvino", "-o", tmp_path / "m.openvino", "--json", "-q"))
    folder = tmp_path / "m.openvino"
    assert summary["verified"] and summary["max_abs_diff"] <= 1e-4 and summary["precision"] == "float32"
    assert sorted(p.name for p in folder.iterdir()) == ["model.bin", "model.xml", "vqtool.json"]
    document = json.loads((folder / "vqtool.json").read_text())
    assert document["classes"] == ["horizontal", "vertical"] and document["preprocess"]["size"] == 28
    assert set(document["sha256"]) == {"model.xml", "model.bin"}
    original = summary_of(run_cli("eval", run, data, "--json", "-q"))
    for target in (folder, folder / "model.xml"):  # the folder or its model.xml
        exported = summary_of(run_cli("eval", target, data, "--json", "-q", "--threads", "1"))
        assert exported["top1"] == original["top1"] and exported["loss"] == pytest.approx(original["loss"], abs=1e-5)
    lines = run_cli("predict", data / "val", "-w", folder, "--format", "jsonl", "--threads", "1").stdout.splitlines()
    assert len(lines) == 24 and json.loads(lines[0])["class"] in ("horizontal", "vertical")


@pytest.mark.parametrize("fmt, name", [("onnx", "model.int8.onnx"), ("openvino", "model.int8.openvino")])
def test_int8_is_calibrated_and_judged_on_held_out_images(run_cli, trained, tmp_path, fmt, name):
    run, data = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = run_cli("export", copy, "--format", fmt, "--int8", "--calibration-images", "8", "--json")
    summary = summary_of(result)
    assert summary["file"] == str(copy / name) and summary["precision"] == "int8"
    assert "calibrating int8 on 8 training images" in result.stderr
    assert "Statistics collection" not in result.output  # NNCF's own bars: not in a pipe, nor under --quiet
    assert summary["held_out_images"] == 24 and summary["max_drop"] == 1.0
    assert summary["accuracy_drop"] == pytest.approx((summary["checkpoint_accuracy"] - summary["export_accuracy"]) * 100)
    assert summary["verified"] == (summary["accuracy_drop"] <= 1.0)
    assert 0.5 <= summary["top1_agreement"] <= 1.0
    evaluated = summary_of(run_cli("eval", summary["file"], data, "--json", "-q"))
    assert evaluated["top1"] == pytest.approx(summary["export_accuracy"])
    if fmt == "onnx":
        import onnx

        ops = {node.op_type for node in onnx.load(summary["file"]).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantized (QDQ)


def test_an_export_losing_more_than_max_drop_is_kept_flagged_and_exits_1(trained, tmp_path):
    """judge_int8 on a real runtime whose answers are the checkpoint's reversed: every answer changes."""
    from vqtool.classification.checkpoints.format import load_checkpoint
    from vqtool.classification.export.quantize import judge_int8
    from vqtool.errors import VQError
    from vqtool.exporting import ExportOptions, check_verified
    from vqtool.reporter import SILENT

    run, _ = trained
    checkpoint = load_checkpoint(str(run))

    def reversed_model(images):
        return checkpoint.model(images).flip(1)

    verdict = judge_int8(checkpoint, checkpoint.preprocess, reversed_model, ExportOptions(int8=True), SILENT)
    assert verdict["top1_agreement"] == 0.0 and verdict["accuracy_drop"] > 1.0 and verdict["verified"] is False
    with pytest.raises(VQError, match=r"loses 100.00 accuracy points .* \(--max-drop 1\); the file is kept") as error:
        check_verified({"file": "m.int8.onnx", **verdict})
    assert error.value.exit_code == 1


@pytest.mark.parametrize("args, code, message", [
    (["--format", "torchscript", "--int8"], 2, "--int8 applies to onnx and openvino"),
    (["--calibrate", "x"], 2, "apply to --int8 exports"),
    (["--int8", "--half"], 2, "choose one precision"),
    (["--format", "openvino", "--opset", "13"], 2, "--opset applies to ONNX"),
    (["-o", "m.onnx", "--format", "openvino"], 2, "must end in .openvino"),
    (["--int8", "--calibrate", "no-such-data"], 2, "--int8 needs calibration images"),
])
def test_refusals_are_one_line(run_cli, trained, tmp_path, args, code, message):
    run, _ = trained
    one_error_line(run_cli("export", run, *args), code, message)


def test_int8_of_a_detector_points_to_ultralytics(run_cli, tmp_path):
    one_error_line(run_cli("export", tmp_path / "yolov8n.pt", "--int8"), 2, "Ultralytics' own int8 export")


def test_no_calibration_images_is_one_line(run_cli, trained, tmp_path):
    run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["dataset"] = {**meta["dataset"], "source": str(tmp_path / "gone"), "path": str(tmp_path / "gone")}
    (copy / "model.json").write_text(json.dumps(meta))
    one_error_line(run_cli("export", copy, "--int8"), 1, "--int8 needs calibration images")


@pytest.mark.parametrize("module, args", [("openvino", ["--format", "openvino"]),
                                          ("nncf", ["--format", "openvino", "--int8"])])
def test_a_missing_runtime_is_one_line_with_the_install_line(run_cli, trained, tmp_path, monkeypatch,
                                                             module, args):
    run, _ = trained
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    result = run_cli("export", run, *args, "-o", tmp_path / "m.openvino")
    one_error_line(result, 1, f"needs the {module} package")
    assert "pip install 'vqtool[openvino]'" in result.stderr and not (tmp_path / "m.openvino").exists()


def flip_byte(path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_or_truncated_exports_are_refused_at_load(run_cli, trained, tmp_path):
    import onnx

    run, data = trained
    ir = tmp_path / "m.openvino"
    summary_of(run_cli("export", run, "--format", "openvino", "-o", ir, "--no-verify", "--json", "-q"))
    summary_of(run_cli("export", run, "--int8", "-o", tmp_path / "m.int8.onnx", "--no-verify", "--json", "-q"))
    flipped, truncated, weights = (tmp_path / f"{n}.openvino" for n in ("flipped", "truncated", "xml"))
    for folder in (flipped, truncated, weights):
        shutil.copytree(ir, folder)
    flip_byte(flipped / "model.bin", 100)
    (truncated / "model.bin").write_bytes((ir / "model.bin").read_bytes()[:1000])
    (weights / "model.xml").write_text((ir / "model.xml").read_text().replace('name="logits"', 'name="other"', 1))
    model = onnx.load(tmp_path / "m.int8.onnx")
    tensor = next(t for t in model.graph.initializer if t.raw_data and len(t.raw_data) > 8)
    tensor.raw_data = bytes(b ^ 1 for b in tensor.raw_data)
    onnx.save(model, tmp_path / "tampered.onnx")
    (tmp_path / "cut.onnx").write_bytes((tmp_path / "m.int8.onnx").read_bytes()[:3000])
    for target, message in ((flipped, "model.bin does not match"), (truncated, "model.bin does not match"),
                            (weights, "model.xml does not match"), (tmp_path / "tampered.onnx", "onnx_graph does not match"),
                            (tmp_path / "cut.onnx", "not a readable ONNX model")):
        result = run_cli("eval", target, data, "--json")
        assert result.exit_code in (1, 2) and message in result.stderr, (target, result.output)
        assert result.stderr.count("\n") == 1 and not result.stdout
    assert torch.get_num_threads() >= 1


def test_threads_reach_every_runtime(run_cli, trained, tmp_path):
    from vqtool.classification.inference.exported import load_exported

    run, data = trained
    summary_of(run_cli("export", run, "-o", tmp_path / "m.onnx", "--no-verify", "--json", "-q"))
    summary_of(run_cli("export", run, "--format", "openvino", "-o", tmp_path / "m.openvino", "--no-verify", "-q",
                       "--json"))
    before = torch.get_num_threads()
    try:
        summary_of(run_cli("eval", tmp_path / "m.onnx", data, "--threads", "1", "--json", "-q"))
        assert torch.get_num_threads() == 1  # --threads set torch's count, which the runtimes read at load
        onnx_model = load_exported(tmp_path / "m.onnx").model
        ir_model = load_exported(tmp_path / "m.openvino").model
        assert onnx_model.session.get_session_options().intra_op_num_threads == 1
        assert int(ir_model.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
        assert str(ir_model.compiled.get_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")
    finally:
        torch.set_num_threads(before)


def test_an_existing_ir_folder_is_replaced_only_with_overwrite(run_cli, trained, tmp_path):
    run, _ = trained
    folder = tmp_path / "m.openvino"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    one_error_line(run_cli("export", run, "--format", "openvino", "-o", folder), 2, "already exists")
    assert (folder / "notes.txt").read_text() == "mine"
    summary_of(run_cli("export", run, "--format", "openvino", "-o", folder, "--overwrite", "--json", "-q"))
    assert sorted(p.name for p in folder.iterdir()) == ["model.bin", "model.xml", "vqtool.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.openvino"]  # no temporary folder left behind


def test_openvino_and_nncf_send_no_telemetry():
    """Their usage data would go to Intel (offline, a forked sender hangs holding stdout open); vqtool declines.
    A process of its own: the first import of openvino sets telemetry up, and this module has imported it."""
    pytest.importorskip("openvino_telemetry")
    script = ("from vqtool.exporting import require; require('openvino', 'a test'); require('nncf', 'a test');"
              "from openvino_telemetry import Telemetry;"
              "print(Telemetry(app_name='t', app_version='0', tid='G-T', backend='ga4', enable_opt_in_dialog=False,"
              " disable_in_ci=True).consent)")
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
