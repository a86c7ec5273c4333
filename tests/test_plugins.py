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


# --- subcommands from plugins (entry point group vqtool.commands) -------------------------------------------


def _has_plugin_command(name: str) -> bool:
    from importlib.metadata import entry_points

    return any(entry_point.name == name for entry_point in entry_points(group="vqtool.commands"))


@pytest.mark.skipif(not _has_plugin_command("tinyvgg"),
                    reason="plugins/vqtool-tinyvgg with its vqtool.commands entry point is not installed "
                           "(pip install -e plugins/vqtool-tinyvgg)")
def test_the_example_plugins_subcommand_runs(run_cli):
    from vqtool_tinyvgg.model import TinyVGG

    result = run_cli("tinyvgg", "--size", "32", "--classes", "3")
    assert result.exit_code == 0, result.output
    expected = sum(p.numel() for p in TinyVGG(3, 3, size=32).parameters())
    assert json.loads(result.stdout) == {"model": "tinyvgg", "size": 32, "parameters": expected}


hello = None  # the command a fake entry point names (made in the test: importing this module stays cheap)


def test_a_plugin_entry_point_adds_a_subcommand_and_cannot_replace_a_builtin(run_cli, monkeypatch):
    import click
    from importlib.metadata import EntryPoint

    import vqtool.catalog

    @click.command()
    @click.argument("who")
    def greet(who):
        """Say hello."""
        click.echo(f"hello {who}")

    monkeypatch.setattr(sys.modules[__name__], "hello", greet)
    fake = [EntryPoint("hello", f"{__name__}:hello", "vqtool.commands"),
            EntryPoint("train", f"{__name__}:hello", "vqtool.commands")]  # a built-in's name: the built-in stays
    real = vqtool.catalog.entry_points
    monkeypatch.setattr(vqtool.catalog, "entry_points",
                        lambda group: fake if group == "vqtool.commands" else real(group=group))
    assert "hello" in run_cli("--help").stdout
    assert run_cli("hello", "plugins").stdout == "hello plugins\n"
    assert "Train a CNN" in run_cli("train", "--help").stdout
    monkeypatch.setenv("VQTOOL_PLUGINS", "none")  # VQTOOL_PLUGINS=none turns plugin commands off too
    assert run_cli("hello", "x").exit_code == 2
