import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

import pytest

try:
    version("vqtool-tinyvgg")
    HAVE_EXAMPLE = True
except PackageNotFoundError:
    HAVE_EXAMPLE = False

needs_example = pytest.mark.skipif(not HAVE_EXAMPLE, reason="plugins/vqtool-tinyvgg is not installed (make test installs it)")


def vqtool(*args, env=None, pythonpath=None):
    environment = {**os.environ, **(env or {})}
    if pythonpath:
        environment["PYTHONPATH"] = os.pathsep.join([str(pythonpath), environment.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "vqtool", *args], capture_output=True, text=True, env=environment)


@needs_example
def test_example_plugin_is_listed_and_trains(run_cli, class_tree):
    models = {m["name"]: m for m in json.loads(run_cli("models", "--json").stdout)}
    assert models["tinyvgg"]["source"] == "vqtool-tinyvgg"
    for listing in (run_cli("plugins", "--json"), run_cli("plugins", "--check", "--json")):  # declared, imported
        plugins = {p["name"]: p for p in json.loads(listing.stdout)}
        assert plugins["vqtool-tinyvgg"]["models"] == ["tinyvgg"] and plugins["vqtool-tinyvgg"]["version"] == "0.1.0"
    result = run_cli("train", class_tree, "--model", "tinyvgg", "--epochs", "1", "--json", "-q", "--out", "tv")
    assert result.exit_code == 0, result.output
    assert json.loads(open("tv/model.json").read())["preprocess"]["size"] == 64
    summary = json.loads(run_cli("conv", "summary", "tinyvgg", "--json").stdout)
    assert summary["input"] == [3, 64, 64]
    assert summary["total_params"] == sum(layer["params"] for layer in summary["layers"]) > 0


@needs_example
def test_vqtool_plugins_none_disables_plugins():
    names = {m["name"] for m in json.loads(vqtool("models", "tiny*", "--json", env={"VQTOOL_PLUGINS": "none"}).stdout)}
    assert "tinyvgg" not in names


def test_a_broken_plugin_is_reported_once_and_vqtool_keeps_working(tmp_path):
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[vqtool.models]\nbroken = broken_plugin_module\n")
    (tmp_path / "broken_plugin_module.py").write_text("raise ImportError('needs a library that is missing')\n")
    result = vqtool("models", "smallcnn", "--json", pythonpath=tmp_path)  # listed without importing plugins
    assert result.returncode == 0
    assert [m["name"] for m in json.loads(result.stdout)] == ["smallcnn"]
    checked = vqtool("plugins", "--check", "--json", pythonpath=tmp_path)
    assert checked.stderr.count("plugin broken-plugin failed to load: needs a library that is missing") == 1
    assert any(p["name"] == "broken-plugin" and "ImportError" in p["error"] for p in json.loads(checked.stdout))
