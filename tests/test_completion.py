import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_current(shell):
    env = {**os.environ, "_VQTOOL_COMPLETE": f"{shell}_source"}
    generated = subprocess.run([sys.executable, "-m", "vqtool"], env=env, capture_output=True, text=True).stdout
    # `python -m vqtool` and the `vqtool` script differ only in the program name Click derives.
    assert generated == (ROOT / "completions" / f"vqtool.{shell}").read_text(), "run `make completions`"


def test_model_names_list_is_current():
    from vqtool.registry import model_names, model_source

    listed = set((ROOT / "vqtool" / "model_names.txt").read_text().split())
    live = {n for n in model_names() if model_source(n) in ("builtin", "torchvision", "timm")}
    assert listed == live, "run `make completions`"


def test_catalog_is_current():
    from vqtool.catalog import packaged
    from vqtool.commands.listing import live_dataset_rows, live_model_rows

    catalog = packaged()
    assert catalog["models"] == [r for r in live_model_rows() if r["source"] in ("builtin", "torchvision", "timm")], \
        "run `make completions`"
    assert catalog["datasets"] == [r for r in live_dataset_rows() if r["source"] == "builtin"], "run `make completions`"


def test_listings_answer_without_importing_torch():
    code = """
import sys
from click.testing import CliRunner
from vqtool.cli import cli
outputs = [CliRunner().invoke(cli, [*command, "--json"]).output for command in (["models"], ["datasets"], ["plugins"])]
print("torch" in sys.modules or "timm" in sys.modules or "torchvision" in sys.modules, '"smallcnn"' in outputs[0],
      '"fashion-mnist"' in outputs[1])
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "True", "True"], result.stderr


def test_completing_models_and_datasets_is_fast_and_never_imports_torch():
    code = """
import json, sys
from click.shell_completion import BashComplete
from vqtool.cli import cli
complete = BashComplete(cli, {}, "vqtool", "_VQTOOL_COMPLETE")
values = lambda args, incomplete: [i.value for i in complete.get_completions(args, incomplete)]
print(json.dumps({"models": values(["train", "--model"], "resnet1"), "timm": values(["train", "--model"], "timm/tf_eff"),
                  "datasets": values(["train"], "fash"), "commands": values([], "con"),
                  "torch": "torch" in sys.modules}))
"""
    result = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
    assert {"resnet18", "resnet101"} <= set(result["models"])
    assert "timm/tf_efficientnet_lite0" in result["timm"]
    assert "fashion-mnist" in result["datasets"]
    assert "confusion" in result["commands"]
    assert result["torch"] is False


def bash_completions(words: list[str], cwd: Path) -> list[str]:
    """What the shipped bash script puts in COMPREPLY for `words` (the last one being completed), in a real bash."""
    bin_dir = cwd / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "vqtool").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vqtool "$@"\n')
    (bin_dir / "vqtool").chmod(0o755)
    script = (f'source "{ROOT / "completions" / "vqtool.bash"}"\n'
              f'COMP_WORDS=({" ".join(words)}); COMP_CWORD={len(words) - 1}\n'
              '_vqtool_completion vqtool\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_bash_offers_dataset_names_and_paths_together(tmp_path):
    (tmp_path / "fashion-photos").mkdir()
    assert bash_completions(["vqtool", "train", "fash"], tmp_path) == ["fashion-mnist", "fashion-photos"]
    assert bash_completions(["vqtool", "finetune", "fashion-m"], tmp_path) == ["fashion-mnist"]
    assert "cifar10" in bash_completions(["vqtool", "train", ""], tmp_path)
    assert bash_completions(["vqtool", "train", "--model", "resnet1"], tmp_path)[:1] == ["resnet101"]
