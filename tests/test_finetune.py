"""vqtool finetune: pretrained weights from files and caches, freezing, staged unfreezing, the feature cache."""

import csv
import json
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ASSETS, make_class_tree, requires_assets, summary_of


@pytest.fixture
def tree(tmp_path):
    return make_class_tree(tmp_path / "stripes", per_class=16, size=32)


def save_torchvision_weights(path: Path, wrap: bool = True) -> Path:
    """Random resnet18 weights in torchvision's layout, as a training script might save them."""
    import torchvision

    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    if wrap:
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(state, path)
    return path


def save_timm_weights(path: Path) -> Path:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    save_file(timm.create_model("resnet10t").state_dict(), str(path))
    return path


def test_torchvision_finetune_from_a_local_file_trains_only_the_head_on_cached_features(run_cli, tree, tmp_path):
    weights = save_torchvision_weights(tmp_path / "resnet18.pth")
    summary = summary_of(run_cli("finetune", tree, "--model", "resnet18", "--weights", weights, "--imgsz", "32",
                                 "--epochs", "2", "--json", "-q", "--out", "run"))
    assert summary["feature_cache"] is True and summary["freeze"] == "backbone" and summary["epochs"] == 2
    # honest figures: the whole job's throughput counts the backbone pass; the head's is named as such
    assert summary["backbone_seconds"] > 0 and summary["head_seconds"] >= 0 and summary["head_images_per_second"] > 0
    header = Path("run/metrics.csv").read_text().splitlines()[0].split(",")
    assert "head_seconds" in header and "head_images_per_second" in header and "seconds" not in header
    assert summary["images_per_second"] < summary["head_images_per_second"]
    train_images = len(list((tree / "train").rglob("*.png")))
    assert summary["images_per_second"] == pytest.approx(
        2 * train_images / (summary["backbone_seconds"] + summary["head_seconds"]), rel=0.05)
    meta = json.loads(Path("run/model.json").read_text())
    assert meta["architecture"] == "resnet18" and meta["weights"] == str(weights)
    assert meta["preprocess"]["size"] == 32 and meta["preprocess"]["mean"] == [0.485, 0.456, 0.406]
    # the backbone is exactly the file's: only the head moved
    from safetensors.torch import load_file

    saved = load_file("run/model.safetensors")
    original = torch.load(weights)["state_dict"]
    assert torch.equal(saved["layer4.1.conv2.weight"], original["module.layer4.1.conv2.weight"])
    assert saved["fc.weight"].shape == (2, 512)
    evaluation = summary_of(run_cli("eval", "run", "--json"))
    assert evaluation["top1"] == pytest.approx(summary["val_top1"], abs=1e-6)


def test_cached_and_uncached_heads_learn_the_same(run_cli, tree, tmp_path):
    weights = save_torchvision_weights(tmp_path / "resnet18.pth", wrap=False)
    common = ("finetune", tree, "--model", "resnet18", "--weights", weights, "--imgsz", "32", "--epochs", "3",
              "--json", "-q")
    cached = summary_of(run_cli(*common, "--out", "cached"))
    uncached = summary_of(run_cli(*common, "--no-cache", "--out", "uncached"))
    assert cached["feature_cache"] and not uncached["feature_cache"]
    assert cached["val_loss"] == pytest.approx(uncached["val_loss"], abs=1e-3)
    assert cached["train_loss"] == pytest.approx(uncached["train_loss"], abs=1e-3)


@pytest.mark.parametrize("with_onnxruntime", [True, False])
def test_frozen_backbone_features_are_torch_s_in_either_runtime(with_onnxruntime, monkeypatch, reporter):
    import torchvision

    from vqtool.classification.training.features import frozen_backbone

    if not with_onnxruntime:
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=3).eval()
    images = torch.randn(6, 3, 64, 64)
    with torch.no_grad():
        expected = torch.flatten(model.avgpool(model.features(images)), 1)
        expected = model.classifier[:-1](expected)  # what the last layer, the head, receives
        with frozen_backbone(model, "classifier.3", images[:4], reporter) as backbone:
            features = backbone(images)
    assert torch.allclose(features, expected, rtol=1e-3, atol=1e-4)
    runtime = "onnxruntime" if with_onnxruntime else "torch (onnx and onnxruntime are not installed)"
    assert any(f"backbone runs in {runtime}" in line for line in reporter.logs)
    assert isinstance(model.classifier[3], torch.nn.Linear) and not model.classifier[3]._forward_pre_hooks


def test_timm_finetune_with_staged_unfreezing(run_cli, tree, tmp_path):
    weights = save_timm_weights(tmp_path / "resnet10t.safetensors")
    result = run_cli("finetune", tree, "--model", "timm/resnet10t", "--weights", weights, "--imgsz", "32",
                     "--epochs", "3", "--unfreeze-at", "2", "--unfreeze", "1", "--head", "mlp", "--json",
                     "--out", "run")
    summary = summary_of(result)
    assert summary["feature_cache"] is False and summary["epochs"] == 3
    assert "epoch 2: unfreezing layer4" in result.stderr
    from safetensors.torch import load_file

    last = torch.load("run/state.pt", weights_only=True)["model"]  # the last epoch's weights
    original = load_file(str(weights))
    # unfrozen, trained (the shortcut's conv: timm zero-initialises the residual branch's last norm scale, and
    # the random weights keep it zero, since the norms of stages unfrozen mid-run keep scale and statistics)
    assert not torch.equal(last["layer4.0.downsample.1.weight"], original["layer4.0.downsample.1.weight"])
    for kept in ("layer4.0.bn1.running_mean", "layer4.0.bn1.weight"):
        assert torch.equal(last[kept], original[kept])
    assert torch.equal(last["layer3.0.conv1.weight"], original["layer3.0.conv1.weight"])  # still frozen
    assert load_file("run/model.safetensors")["fc.3.weight"].shape == (2, 512)  # the mlp head
    evaluation = summary_of(run_cli("eval", "run", "--json"))  # the checkpoint rebuilds the mlp head
    assert evaluation["top1"] == pytest.approx(summary["val_top1"], abs=1e-6)


def test_enum_weights_come_from_the_torch_cache_without_network(run_cli, tree, tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr("vqtool.models.weights.reachable", lambda host: pytest.fail("no network call expected"))
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(2)
    torch.save(torchvision.models.resnet18().state_dict(), cache / "resnet18-f37072fd.pth")
    summary = summary_of(run_cli("finetune", tree, "--weights", "DEFAULT", "--imgsz", "32", "--epochs", "1",
                                 "--json", "-q", "--out", "run"))
    assert json.loads(Path("run/model.json").read_text())["weights"] == "torchvision ResNet18_Weights.IMAGENET1K_V1"
    assert summary["epochs"] == 1


def test_offline_with_an_empty_cache_fails_fast_with_a_way_out(run_cli, tree, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr("vqtool.models.weights.reachable", lambda host: False)
    started = time.perf_counter()
    result = run_cli("finetune", tree, "--weights", "DEFAULT", "--imgsz", "32")
    assert result.exit_code == 1 and time.perf_counter() - started < 10
    assert "resnet18-f37072fd.pth" in result.stderr and "--weights PATH" in result.stderr
    assert not Path("runs").exists()


def test_offline_timm_tag_names_the_cache_and_the_way_out(run_cli, tree, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("vqtool.models.weights.reachable", lambda host: False)
    result = run_cli("finetune", tree, "--model", "timm/resnet10t", "--weights", "timm/resnet10t.c3_in1k")
    assert result.exit_code == 1 and "--weights PATH" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (("--freeze", "sideways"), "--freeze sideways"),
    (("--weights", "missing.pth"), "no such file"),
    (("--weights", "IMAGENET9K"), "not a weights name of resnet18"),
    (("--freeze", "until:layer9"), "no such layer"),
    (("--unfreeze-at", "1"), "--unfreeze-at 1"),
])
def test_bad_options_get_one_line(run_cli, tree, tmp_path, args, message):
    weights = () if "--weights" in args else ("--weights", save_torchvision_weights(tmp_path / "w.pth"))
    result = run_cli("finetune", tree, "--imgsz", "32", *weights, *args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_mismatched_and_unexpected_keys_are_reported_not_fatal(run_cli, tree, tmp_path):
    import torchvision

    state = torchvision.models.resnet18(num_classes=7).state_dict()
    state["layer1.0.bn1.weight"] = torch.ones(3)  # wrong shape: dropped
    state["extra.weight"] = torch.zeros(1)
    del state["layer4.1.bn2.bias"]
    torch.save(state, tmp_path / "odd.pth")
    result = run_cli("finetune", tree, "--weights", tmp_path / "odd.pth", "--imgsz", "32", "--epochs", "1",
                     "--out", "run")
    assert result.exit_code == 0, result.output
    for note in ("dropped (shape differs): layer1.0.bn1.weight", "missing", "layer4.1.bn2.bias",
                 "unexpected (ignored): extra.weight"):
        assert note in result.stderr


def test_lr_find_suggests_a_rate_and_plots_it(run_cli, tree, tmp_path):
    weights = save_torchvision_weights(tmp_path / "w.pth")
    summary = summary_of(run_cli("finetune", tree, "--weights", weights, "--imgsz", "32", "--lr-find", "--json",
                                 "-q", "--out", "lrf"))
    assert summary["steps"] >= 10
    rows = list(csv.DictReader(open("lrf/lr_find.csv")))
    assert summary["suggested_lr"] in {float(row["lr"]) for row in rows}  # a rate the test tried
    assert summary["suggested_lr"] < summary["min_loss_lr"]  # below the minimum, where the loss still falls
    assert Path(summary["plot"]).stat().st_size > 1000 and Path("lrf/lr_find.csv").is_file()
    assert not Path("lrf/model.safetensors").exists()
    plain = summary_of(run_cli("train", tree, "--model", "smallcnn", "--lr-find", "--json", "-q", "--out", "t"))
    assert 1e-7 < plain["suggested_lr"] < 10


def test_resume_a_finetuning_run(run_cli, tree, tmp_path):
    weights = save_torchvision_weights(tmp_path / "w.pth")
    summary_of(run_cli("finetune", tree, "--weights", weights, "--imgsz", "32", "--epochs", "1", "--json", "-q",
                       "--out", "run"))
    resumed = summary_of(run_cli("finetune", "--resume", "run", "--epochs", "2", "--json", "-q"))
    assert resumed["epochs"] == 2
    wrong = run_cli("train", "--resume", "run")
    assert wrong.exit_code == 2 and "vqtool finetune --resume" in wrong.stderr
    trained = run_cli("train", tree, "--model", "smallcnn", "--epochs", "1", "--out", "trained", "-q")
    assert trained.exit_code == 0, trained.output
    wrong = run_cli("finetune", "--resume", "trained")
    assert wrong.exit_code == 2 and "vqtool train --resume" in wrong.stderr


def test_freezing_by_stages_and_until_a_layer():
    import torchvision

    from vqtool.models.freezing import FreezeSpec, apply_freeze, set_train_mode, stages

    model = torchvision.models.resnet18()
    assert stages(model, "fc") == [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
    apply_freeze(model, "fc", FreezeSpec.parse("1"))
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}
    apply_freeze(model, "fc", FreezeSpec.parse("until:layer2"))
    assert not model.layer2[1].conv2.weight.requires_grad and model.layer3[0].conv1.weight.requires_grad
    set_train_mode(model)
    assert not model.bn1.training and not model.layer2[1].bn2.training and model.layer3[0].bn1.training

    efficientnet = torchvision.models.efficientnet_b0()
    parts = stages(efficientnet, "classifier.1")
    assert parts[0] == ["features.0"] and parts[-1] == ["features.8"] and len(parts) == 9


@requires_assets
@pytest.mark.assets
def test_efficientnet_lite0_reaches_95_percent_on_cats_and_dogs(run_cli):
    data = Path(ASSETS) / "data" / "cats_vs_dogs"
    weights = Path(ASSETS) / "weights" / "tf_efficientnet_lite0.in1k.safetensors"
    common = ("finetune", data, "--model", "timm/tf_efficientnet_lite0", "--weights", weights, "--json", "-q")
    frozen = summary_of(run_cli(*common, "--out", "frozen"))
    assert frozen["val_top1"] >= 0.95 and frozen["epochs"] == 5
    staged = summary_of(run_cli(*common, "--unfreeze-at", "3", "--unfreeze", "2", "--out", "staged"))
    assert staged["val_top1"] >= 0.95 and staged["val_top1"] >= frozen["val_top1"] - 0.01
