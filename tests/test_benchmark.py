"""vqtool benchmark: every available format measured on real images, one table, skipped runtimes said."""

import sys

import pytest

from conftest import summary_of

pytest.importorskip("onnxruntime")

FAST = ("--seconds", "0.05", "--calibration-images", "8")


def test_every_format_is_measured_and_the_fastest_within_max_drop_is_marked(run_cli, trained):
    from vqtool.compute.cpu import cpu_features

    run, data = trained
    result = run_cli("benchmark", run, data, "--batch", "1,4", *FAST, "--json")
    report = summary_of(result)
    measured = [row["format"] for row in report["formats"]]
    skipped = {row["format"]: row["reason"] for row in report["skipped"]}
    assert sorted(measured + list(skipped)) == sorted(["torch", "torchscript", "onnx", "onnx-int8", "openvino",
                                                       "openvino-bf16", "openvino-int8"])
    assert measured[0] == "torch" and {"torchscript", "onnx", "onnx-int8"} <= set(measured)
    if not cpu_features().native_bf16:
        assert "no native bf16" in skipped["openvino-bf16"]
    assert report["images"] == 24 and report["cpu"]["summary"] == cpu_features(with_openvino=True).describe()
    for row in report["formats"]:
        assert row["batch1_ms_p90"] >= row["batch1_ms_median"] > 0
        assert row["batch4_images_per_second"] == pytest.approx(4000 / row["batch4_ms_median"], rel=1.0)
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["agreement"] <= 1 and row["load_seconds"] >= 0
    assert report["formats"][0]["agreement"] == 1.0 and report["formats"][0]["accuracy_drop"] == 0
    eligible = [row for row in report["formats"] if row["accuracy_drop"] <= 1.0]
    fastest = max(eligible, key=lambda row: row["batch4_images_per_second"])
    assert report["fastest"] == fastest["format"] and [r["fastest"] for r in report["formats"]].count(True) == 1
    assert not list(run.glob("*.onnx")) and not list(run.glob("*.openvino"))  # built in a temporary folder


def test_the_table_has_the_cpu_in_its_heading_and_lists_skipped_runtimes(run_cli, trained, monkeypatch):
    run, data = trained
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "openvino" else object())
    result = run_cli("benchmark", run, "--formats", "torch,onnx,openvino", "--batch", "2", *FAST)
    assert result.exit_code == 0, result.output
    assert "CPU " in result.stdout and "b2 img/s" in result.stdout and "fastest" in result.stdout
    assert "skipped openvino: openvino is not installed: pip install 'vqtool[openvino]'" in result.stdout


def test_an_export_is_measured_as_it_is(run_cli, trained, tmp_path):
    run, data = trained
    summary_of(run_cli("export", run, "-o", tmp_path / "m.onnx", "--json", "-q"))
    report = summary_of(run_cli("benchmark", tmp_path / "m.onnx", data, "--batch", "1", *FAST, "--json", "-q"))
    assert [row["format"] for row in report["formats"]] == ["onnx"] and report["fastest"] == "onnx"
    assert report["formats"][0]["size_mb"] == pytest.approx((tmp_path / "m.onnx").stat().st_size / 1e6, abs=0.01)


@pytest.mark.parametrize("args, message", [
    (["--formats", "tflite"], "choose from torch"),
    (["--batch", "0"], "positive integers"),
    (["--batch", "x"], "comma-separated"),
])
def test_bad_options_are_one_line(run_cli, trained, args, message):
    run, _ = trained
    result = run_cli("benchmark", run, *args)
    assert result.exit_code == 2 and message in result.stderr


def test_what_is_not_a_classifier_is_refused(run_cli, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = run_cli("benchmark", tmp_path / "notes.txt")
    assert result.exit_code == 2 and result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
