"""Data-parallel training with torchrun on CPU (gloo): two processes, one run folder, the same accuracy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_class_tree, summary_of


def torchrun(*args, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "vqtool", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow  # over 30 s in the default suite (measured with --durations)
def test_two_processes_train_digits_like_one(run_cli, tmp_path):
    single = json.loads(run_cli("train", "digits", "--batch-size", "64", "--out", "single", "--json", "-q").stdout)
    work = tmp_path / "ddp"
    work.mkdir()
    result = torchrun("train", "digits", "--batch-size", "32", "--out", "run", "--json", cwd=work)
    summary = summary_of(result)
    assert sorted(p.name for p in work.iterdir()) == ["run"]  # one run folder, written once
    assert {"model.safetensors", "model.json", "state.pt", "metrics.csv"} <= {p.name for p in (work / "run").iterdir()}
    assert "global batch 64 (2 processes x --batch-size 32)" in result.stderr
    assert result.stderr.count("epoch 10/10") == 1  # only rank 0 reports progress
    assert abs(summary["test_top1"] - single["test_top1"]) <= 0.02
    assert summary["epochs"] == 10

    resumed = summary_of(torchrun("train", "--resume", "run", "--epochs", "11", "--json", "-q", cwd=work))
    assert resumed["epochs"] == 11 and abs(resumed["test_top1"] - single["test_top1"]) <= 0.03


def test_two_processes_finetune_on_a_shared_feature_cache(tmp_path):
    import torch
    import torchvision

    make_class_tree(tmp_path / "stripes", per_class=16, size=32)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "w.pth")
    summary = summary_of(torchrun("finetune", "stripes", "--weights", "w.pth", "--imgsz", "32", "--epochs", "2",
                                  "--batch-size", "8", "--out", "run", "--json", "-q", cwd=tmp_path))
    assert summary["feature_cache"] is True and summary["epochs"] == 2
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_lr_find_refuses_torchrun(tmp_path):
    result = torchrun("train", "digits", "--lr-find", cwd=tmp_path)
    assert result.returncode != 0 and "--lr-find runs in one process" in result.stderr
