import json

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One trained digits checkpoint shared by this module's tests."""
    from click.testing import CliRunner

    from vqtool.cli import cli

    run = tmp_path_factory.mktemp("runs") / "digits"
    result = CliRunner().invoke(cli, ["train", "--epochs", "4", "--json", "-q", "--out", str(run)])
    assert result.exit_code == 0, result.output
    return run, json.loads(result.stdout)


def test_eval_defaults_to_the_checkpoints_own_test_split(run_cli, digits_run):
    run, summary = digits_run
    report = json.loads(run_cli("eval", run, "--json", "-q").stdout)
    assert report["split"] == "test" and report["n"] == 359
    assert report["top1"] == pytest.approx(summary["test_top1"], abs=1e-6)
    assert 0 <= report["top5"] <= 1 and report["top5"] >= report["top1"]
    assert set(report["per_class"]) == {str(d) for d in range(10)}
    assert sum(c["support"] for c in report["per_class"].values()) == 359
    assert {"precision", "recall", "f1", "support"} == set(report["per_class"]["3"])
    assert 0 < report["macro_f1"] <= 1


def test_eval_accepts_the_weights_file_and_prints_a_table(run_cli, digits_run):
    run, _ = digits_run
    result = run_cli("eval", run / "model.safetensors")
    assert result.exit_code == 0
    assert "macro avg" in result.stdout and "top-1" in result.stdout


def test_confusion_json_png_and_examples(run_cli, digits_run):
    run, _ = digits_run
    result = run_cli("confusion", run, "--json", "-q", "--png", "cm.png", "--examples", "bad.png", "--top", "3")
    report = json.loads(result.stdout)
    assert report["classes"] == [str(d) for d in range(10)]
    matrix = report["matrix"]
    assert len(matrix) == 10 and sum(map(sum, matrix)) == 359
    assert len(report["pairs"]) <= 3
    counts = [p["count"] for p in report["pairs"]]
    assert counts == sorted(counts, reverse=True)
    for pair in report["pairs"]:
        assert matrix[int(pair["true"])][int(pair["predicted"])] == pair["count"]
    assert Image.open("cm.png").size[0] > 100
    normalized = json.loads(run_cli("confusion", run, "--json", "-q", "--normalize").stdout)
    assert all(abs(sum(row) - 1) < 1e-9 for row in normalized["matrix"])


def test_eval_on_a_named_folder_uses_every_image(run_cli, tmp_path):
    from conftest import make_class_tree

    tree = make_class_tree(tmp_path / "s", per_class=6)
    assert run_cli("train", tree, "--model", "cnn-bn", "--imgsz", "32", "--epochs", "1", "-q", "--out", "r").exit_code == 0
    holdout = make_class_tree(tmp_path / "holdout", per_class=5, splits=())
    report = json.loads(run_cli("eval", "r", holdout, "--json", "-q").stdout)
    assert report["n"] == 10 and report["top5"] is None


def test_not_a_checkpoint(run_cli, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    (tmp_path / "model.json").write_text(json.dumps({"hello": 1}))
    result = run_cli("eval", tmp_path / "model.safetensors")
    assert result.exit_code == 2 and "not a vqtool checkpoint" in result.stderr
    missing = run_cli("eval", tmp_path / "nothing-here")
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_confusion_examples_without_mistakes_still_writes_the_figure(run_cli, tmp_path):
    """A script that expects --examples FILE gets it: a figure saying there is nothing to show, and its path."""
    import numpy as np

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name, level in (("dark", 20), ("light", 235)):
            folder = tmp_path / "easy" / split / name
            folder.mkdir(parents=True)
            for i in range(12):
                pixels = np.clip(level + rng.normal(0, 5, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    summary = json.loads(run_cli("train", tmp_path / "easy", "--model", "cnn-bn", "--epochs", "3", "--lr", "0.01",
                                 "--out", "easy-run", "--json", "-q").stdout)
    assert summary["val_top1"] == 1.0
    result = run_cli("confusion", "easy-run", "--examples", "mistakes.png", "--png", "cm.png")
    assert result.exit_code == 0
    assert "wrote mistakes.png (no misclassified images" in result.stderr and "wrote cm.png" in result.stderr
    with Image.open("mistakes.png") as figure:
        assert figure.format == "PNG" and figure.width > 100
