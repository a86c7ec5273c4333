"""The registries and the command map, in-process: a plugin registered for one test, shadowing, broken entries."""

import json

import pytest
from torch import nn

from vqtool import registry
from vqtool.errors import VQWarning


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made during the test land in copies of the registries, dropped afterwards (as llm's tests do)."""
    registry.load_all()
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(registry, "_DATASETS", dict(registry._DATASETS))
    monkeypatch.setattr(registry, "_PLUGINS", {name: dict(p) for name, p in registry._PLUGINS.items()})


@pytest.fixture
def tiny_plugin_model(scratch_registry):
    @registry.register_model("tiny-plugin-net", input_size=16, in_channels=3)
    def tiny(num_classes: int, in_channels: int) -> nn.Module:
        """A one-layer test model registered in-process."""
        return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, num_classes))

    return "tiny-plugin-net"


def test_a_model_registered_in_process_is_listed_and_trains(tiny_plugin_model, run_cli, class_tree):
    listed = json.loads(run_cli("models", "tiny-plugin*", "--json").stdout)
    assert [m["name"] for m in listed] == [tiny_plugin_model]
    assert listed[0]["input_size"] == 16 and listed[0]["description"] == "A one-layer test model registered in-process."
    result = run_cli("train", class_tree, "--model", tiny_plugin_model, "--epochs", "1", "--out", "run", "--json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(open("run/model.json").read())["architecture"] == tiny_plugin_model


def test_the_in_process_registration_is_gone_after_its_test(run_cli):
    assert json.loads(run_cli("models", "tiny-plugin*", "--json").stdout) == []


def test_registering_a_taken_name_warns_and_replaces_it(scratch_registry):
    with pytest.warns(VQWarning, match="model 'smallcnn' from test_registry replaces the one from builtin"):
        @registry.register_model("smallcnn", input_size=12)
        def smallcnn(num_classes, in_channels):
            return nn.Linear(1, num_classes)
    assert registry.get_model("smallcnn").input_size == 12


def test_registering_a_new_name_does_not_warn(scratch_registry, recwarn):
    registry.register_model("brand-new-net")(lambda num_classes, in_channels: nn.Linear(1, num_classes))
    assert not [w for w in recwarn if issubclass(w.category, VQWarning)]


@pytest.mark.parametrize("entry, error", [
    ("vqtool.commands.no_such_module:command",
     "Error: the broken command cannot be loaded from vqtool.commands.no_such_module:command "
     "(No module named 'vqtool.commands.no_such_module')"),
    ("vqtool.commands.train:no_such_attribute",
     "Error: the broken command cannot be loaded from vqtool.commands.train:no_such_attribute "
     "(module 'vqtool.commands.train' has no attribute 'no_such_attribute')"),
    ("vqtool.commands.train:training_options",
     "Error: the broken command's entry vqtool.commands.train:training_options is not a Click command"),
])
def test_a_broken_command_entry_is_an_error_not_a_hidden_command(monkeypatch, run_cli, entry, error):
    from vqtool import cli

    monkeypatch.setitem(cli.COMMANDS, "broken", entry)
    result = run_cli("broken")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [error]
    listing = run_cli("--help")  # not hidden from the listing either: a broken install says so
    assert listing.exit_code == 1 and listing.stderr.strip().splitlines() == [error]
