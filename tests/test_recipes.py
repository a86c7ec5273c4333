"""Training recipes: warm-up, clipping, accumulation, class imbalance, mixup/CutMix, EMA, AMP, --recipe, --config."""

import json
import re

import pytest
import torch
from torch import nn

from conftest import make_class_tree, summary_of
from vqtool.classification.config import TrainConfig
from vqtool.classification.training.schedule import WARMUP_START, Schedule


def lrs_of(config: TrainConfig, steps_per_epoch: int) -> list[float]:
    """The LR of every optimizer step of a run, stepping the schedule as the loop does."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=config.lr)
    schedule = Schedule(optimizer, config, steps_per_epoch)
    seen = []
    for _ in range(config.epochs):
        for _ in range(steps_per_epoch):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.after_step()
        schedule.after_epoch(1.0)
    return seen


@pytest.mark.parametrize("scheduler", ["none", "step", "cosine", "plateau", "onecycle"])
def test_warmup_rises_linearly_to_where_the_scheduler_starts(scheduler):
    steps, warm = 4, 2
    plain = lrs_of(TrainConfig(lr=0.1, epochs=5, scheduler=scheduler), steps)
    warmed = lrs_of(TrainConfig(lr=0.1, epochs=5, scheduler=scheduler, warmup_epochs=warm), steps)
    start = plain[0]  # the scheduler's first LR (onecycle starts at its peak / 25)
    expected = [start * (WARMUP_START + (1 - WARMUP_START) * i / (warm * steps)) for i in range(warm * steps)]
    assert warmed[:warm * steps] == pytest.approx(expected)
    assert warmed[warm * steps] == pytest.approx(start)
    # after the warm-up, the scheduler runs its course over the remaining epochs from its start
    shorter = lrs_of(TrainConfig(lr=0.1, epochs=5 - warm, scheduler=scheduler), steps)
    assert warmed[warm * steps:] == pytest.approx(shorter)


def test_a_schedule_resumes_from_its_state_dict():
    config = TrainConfig(lr=0.1, epochs=3, scheduler="cosine", warmup_epochs=1)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = Schedule(optimizer, config, 4)
    for _ in range(6):
        optimizer.step()
        schedule.after_step()
    saved, lr = schedule.state_dict(), optimizer.param_groups[0]["lr"]
    other = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    again = Schedule(other, config, 4)  # the order of a resume: a fresh schedule, then the saved states
    other.load_state_dict(optimizer.state_dict())
    again.load_state_dict(saved)
    assert other.param_groups[0]["lr"] == lr
    for _ in range(3):
        optimizer.step(), other.step(), schedule.after_step(), again.after_step()
    assert other.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])


def linear_step(config: TrainConfig, model: nn.Module, steps_per_epoch: int = 10):
    from vqtool.classification.training.steps import make_train_step
    from vqtool.data import Split
    from vqtool.reporter import SILENT

    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.0)
    schedule = Schedule(optimizer, TrainConfig(scheduler="none", lr=config.lr), steps_per_epoch)
    labels = torch.arange(3).repeat(4)
    return make_train_step(model, optimizer, schedule, Split(labels=labels), ["a", "b", "c"], torch.device("cpu"),
                           config, SILENT)


def test_clipping_bounds_the_gradient_norm():
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    step = linear_step(TrainConfig(clip_grad=0.5, lr=0.1), model)
    x, y = torch.randn(16, 8) * 100, torch.randint(3, (16,))
    step(model, x, y, 0, 10)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm == pytest.approx(0.5, rel=1e-4)  # the unclipped norm is far larger
    unclipped = nn.Linear(8, 3)
    linear_step(TrainConfig(lr=0.1), unclipped)(unclipped, x, y, 0, 10)
    assert torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in unclipped.parameters()])) > 5


def test_accumulating_four_batches_equals_one_batch_four_times_larger():
    torch.manual_seed(0)
    x, y = torch.randn(32, 8), torch.randint(3, (32,))
    big, accumulated = nn.Linear(8, 3), nn.Linear(8, 3)
    accumulated.load_state_dict(big.state_dict())
    linear_step(TrainConfig(lr=0.5), big)(big, x, y, 0, 1)
    step = linear_step(TrainConfig(lr=0.5, accumulate=4), accumulated)
    for index in range(4):
        before = accumulated.weight.detach().clone()
        step(accumulated, x[8 * index:8 * index + 8], y[8 * index:8 * index + 8], index, 4)
        if index < 3:
            assert torch.equal(accumulated.weight, before)  # no optimizer step before the fourth batch
    for mine, theirs in zip(accumulated.parameters(), big.parameters()):
        assert torch.allclose(mine, theirs, atol=1e-6)
    assert step.schedule.steps == 1


def test_a_short_last_group_is_averaged_over_its_own_batches():
    torch.manual_seed(0)
    x, y = torch.randn(8, 8), torch.randint(3, (8,))
    big, accumulated = nn.Linear(8, 3), nn.Linear(8, 3)
    accumulated.load_state_dict(big.state_dict())
    linear_step(TrainConfig(lr=0.5), big)(big, x, y, 0, 1)
    step = linear_step(TrainConfig(lr=0.5, accumulate=4), accumulated)
    step(accumulated, x[:4], y[:4], 4, 6)  # batches 4 and 5 of 6: a group of two
    step(accumulated, x[4:], y[4:], 5, 6)
    assert torch.allclose(accumulated.weight, big.weight, atol=1e-6)


def test_auto_class_weights_are_inverse_frequencies_averaging_one():
    from vqtool.classification.training.imbalance import class_weights

    labels = torch.tensor([0] * 8 + [1] * 2)
    weights = class_weights("auto", labels, ["a", "b"])
    assert weights.tolist() == pytest.approx([10 / (2 * 8), 10 / (2 * 2)])
    assert weights[labels].mean().item() == pytest.approx(1.0)
    assert class_weights(None, labels, ["a", "b"]) is None


def test_class_weights_from_a_file(tmp_path):
    from vqtool.classification.training.imbalance import class_weights
    from vqtool.errors import VQError

    labels = torch.tensor([0, 1])
    (tmp_path / "w.json").write_text(json.dumps({"b": 3, "a": 1}))
    assert class_weights(str(tmp_path / "w.json"), labels, ["a", "b"]).tolist() == [1.0, 3.0]
    (tmp_path / "list.json").write_text("[2, 0.5]")
    assert class_weights(str(tmp_path / "list.json"), labels, ["a", "b"]).tolist() == [2.0, 0.5]
    (tmp_path / "bad.json").write_text(json.dumps({"a": 1, "c": 2}))
    with pytest.raises(VQError, match="no weight for b; unknown classes c"):
        class_weights(str(tmp_path / "bad.json"), labels, ["a", "b"])
    with pytest.raises(VQError, match="not 'auto' or a readable JSON file"):
        class_weights(str(tmp_path / "missing.json"), labels, ["a", "b"])


def test_weighted_loss_counts_the_rare_class_more():
    step = linear_step(TrainConfig(class_weights="auto"), nn.Linear(2, 3))
    assert step.loss_fn.weight.tolist() == pytest.approx([1.0, 1.0, 1.0])  # the helper's labels are balanced


def test_the_balanced_sampler_draws_classes_evenly():
    from vqtool.classification.training.imbalance import balanced_order

    labels = torch.tensor([0] * 90 + [1] * 10)
    order = balanced_order(labels, torch.Generator().manual_seed(0), 20000)
    share = (labels[order] == 1).float().mean().item()
    assert share == pytest.approx(0.5, abs=0.02)


def test_the_imbalance_hint_names_the_classes():
    from vqtool.classification.training.imbalance import imbalance_hint

    assert imbalance_hint(torch.tensor([0] * 3 + [1] * 3), ["a", "b"]) is None
    hint = imbalance_hint(torch.tensor([0] * 30 + [1] * 3), ["cats", "dogs"])
    assert "cats has 30" in hint and "dogs 3" in hint and "--class-weights auto" in hint


def mixer(**options):
    from vqtool.classification.training.mixing import BatchMixer

    return BatchMixer(TrainConfig(**options), num_classes=4)


def test_mixup_targets_sum_to_one_and_the_loss_is_the_mixture():
    torch.manual_seed(0)
    x, y = torch.rand(8, 3, 6, 6), torch.tensor([0, 1, 2, 3, 3, 2, 1, 0]).roll(1)
    mixed, targets = mixer(mixup=1.0)(x.clone(), y)
    assert torch.allclose(targets.sum(1), torch.ones(8))
    lam = targets[0, y[0]].item()
    assert 0 < lam < 1
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    logits = torch.randn(8, 4)
    by_hand = lam * nn.functional.cross_entropy(logits, y) + (1 - lam) * nn.functional.cross_entropy(logits, y.flip(0))
    assert nn.functional.cross_entropy(logits, targets).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_cutmix_pastes_a_box_whose_area_is_the_target_share():
    import numpy as np

    np.random.seed(3)
    x, y = torch.rand(6, 1, 16, 16), torch.tensor([0, 1, 2, 3, 1, 2])
    mixed, targets = mixer(cutmix=1.0, label_smoothing=0.1)(x.clone(), y)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    from_flipped = (mixed != x)[0, 0].float().mean().item()  # the pasted box's share of image 0
    smoothed_own = targets[0, y[0]].item() - 0.1 / 4
    assert smoothed_own / 0.9 == pytest.approx(1 - from_flipped, abs=1e-6)


def test_an_odd_last_image_keeps_its_own_label():
    x, y = torch.rand(5, 3, 4, 4), torch.tensor([0, 1, 2, 3, 2])
    mixed, targets = mixer(mixup=1.0)(x.clone(), y)
    assert torch.equal(mixed[4], x[4])
    assert targets[4].tolist() == [0, 0, 1, 0]


def test_the_weight_average_equals_a_hand_computed_ema_and_copies_batch_norm():
    from vqtool.classification.training.ema import WeightAverage

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    average = WeightAverage(model, decay=0.9)
    expected = model[0].weight.detach().clone()
    for step in range(1, 6):
        with torch.no_grad():
            model[0].weight.add_(torch.randn(4, 4))
        model.train()(torch.randn(8, 4))  # moves the batch-norm statistics
        average.update(model)
        decay = 0.0 if step == 1 else min(0.9, 1 - (1 + (step - 1)) ** (-2 / 3))  # timm's decay warm-up
        expected = decay * expected + (1 - decay) * model[0].weight.detach()
        assert average.decay_at(step) == pytest.approx(decay)
    assert torch.allclose(average.module[0].weight, expected, atol=1e-6)
    assert torch.equal(average.module[1].running_mean, model[1].running_mean)


def test_ema_checkpoint_holds_the_average_and_resume_restores_it(run_cli, class_tree, monkeypatch):
    from safetensors.torch import load_file

    from vqtool.classification.training.run import TrainingRun

    options = ("--epochs", "2", "--ema", "0.9", "--mixup", "0.4", "--scheduler", "none", "--json", "-q")
    straight = summary_of(run_cli("train", class_tree, *options, "--out", "a", "--val-split", "0"))
    meta = json.loads(open("a/model.json").read())
    assert meta["weights_average"] == {"method": "ema", "decay": 0.9}
    state = torch.load("a/state.pt", weights_only=True)
    averaged, saved = state["recipe"]["average"]["module"], load_file("a/model.safetensors")
    assert all(torch.equal(saved[name], averaged[name]) for name in saved)
    assert not all(torch.equal(saved[name], state["model"][name]) for name in saved)  # not the trained weights
    commit = TrainingRun.commit

    def interrupted_after_epoch_1(self, state, **files):
        commit(self, state, **files)
        if state.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainingRun, "commit", interrupted_after_epoch_1)
    assert run_cli("train", class_tree, *options, "--out", "b").exit_code == 130
    monkeypatch.setattr(TrainingRun, "commit", commit)
    resumed = summary_of(run_cli("train", "--resume", "b", "--json", "-q"))
    assert resumed["val_top1"] == pytest.approx(straight["val_top1"])
    again = load_file("b/model.safetensors")
    assert all(torch.allclose(again[name], saved[name], atol=1e-6) for name in saved)


def test_imbalanced_training_data_gets_a_hint_unless_weighted(run_cli, tmp_path):
    tree = make_class_tree(tmp_path / "tree", per_class=2, splits=("val",))
    make_class_tree(tree, per_class=12, splits=("train",), classes=("horizontal",))
    make_class_tree(tree, per_class=2, splits=("train",), classes=("vertical",))
    plain = summary_of(run_cli("train", tree, "--epochs", "1", "--json", "-q", "--out", "plain"))
    assert "imbalanced classes: horizontal has 12 training images, vertical 2 (6x)" in plain["hint"]
    weighted = summary_of(run_cli("train", tree, "--epochs", "1", "--json", "-q", "--out", "weighted",
                                  "--class-weights", "auto", "--balanced-sampler"))
    assert "imbalanced" not in (weighted["hint"] or "")


def test_validation_gives_the_class_balanced_accuracy_beside_the_accuracy():
    from types import SimpleNamespace

    from vqtool.classification.training.objective import validate
    from vqtool.data import Split

    always_first = nn.Linear(1, 3)  # predicts class 0 whatever the image
    with torch.no_grad():
        always_first.weight.zero_(), always_first.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    val = Split(labels=torch.tensor([0, 0, 0, 0, 0, 0, 1, 2]), pixels=torch.zeros(8, 1, 1, 1, dtype=torch.uint8))
    inputs = SimpleNamespace(eval=lambda stored: stored.float().flatten(1), device=torch.device("cpu"))
    loss, top1, balanced = validate(always_first, val, inputs, batch_size=3)
    assert top1 == pytest.approx(6 / 8) and balanced == pytest.approx(1 / 3)  # recalls 1, 0, 0


def test_the_best_epoch_goes_by_the_selection_metric():
    from vqtool.classification.training.objective import selection_metric
    from vqtool.classification.training.run import ResumeState

    epochs = [{"epoch": 1, "val_loss": 0.5, "val_top1": 0.9, "val_balanced_top1": 0.6},  # the majority class
              {"epoch": 2, "val_loss": 0.6, "val_top1": 0.8, "val_balanced_top1": 0.7}]
    for config, best in ((TrainConfig(), 1), (TrainConfig(class_weights="auto"), 2),
                         (TrainConfig(balanced_sampler=True), 2)):
        state = ResumeState(planned_epochs=2)
        for record in epochs:
            state.add(record, nn.Linear(1, 1), has_val=True, key=selection_metric(config))
        assert state.best["epoch"] == best


def test_balancing_runs_keep_the_epoch_of_the_best_class_balanced_val_accuracy(run_cli, tmp_path):
    import csv

    tree = make_class_tree(tmp_path / "tree", per_class=4, splits=("val",))
    make_class_tree(tree, per_class=16, splits=("train",), classes=("horizontal",))
    make_class_tree(tree, per_class=3, splits=("train",), classes=("vertical",))
    result = run_cli("train", tree, "--epochs", "4", "--json", "--out", "run", "--class-weights", "auto")
    summary = summary_of(result)
    assert "the best epoch is the one of the highest class-balanced val accuracy" in result.stderr
    with open("run/metrics.csv") as file:
        rows = list(csv.DictReader(file))
    best = max(rows, key=lambda row: (float(row["val_balanced_top1"]), -float(row["val_loss"])))
    assert summary["best_epoch"] == int(best["epoch"])
    assert summary["val_balanced_top1"] == pytest.approx(float(best["val_balanced_top1"]))


AMX_CPU = frozenset({"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2"})
VNNI_CPU = frozenset({"avx512_vnni", "avx512f", "avx2"})


@pytest.mark.parametrize("mode, flags, dtype, reason, warned", [
    ("auto", AMX_CPU, torch.bfloat16, "computes bf16 natively (amx_bf16 and avx512_bf16)", False),
    ("auto", frozenset({"avx512_bf16", "avx512f"}), torch.bfloat16, "natively (avx512_bf16)", False),
    ("auto", VNNI_CPU, None, "no native bf16", False),
    ("auto", frozenset(), None, "no native bf16", False),
    ("off", AMX_CPU, None, "--amp off", False),
    ("bf16", AMX_CPU, torch.bfloat16, "natively", False),
    ("bf16", VNNI_CPU, torch.bfloat16, "--amp bf16", True),
])
def test_amp_on_the_cpu_is_decided_by_the_cpus_native_bf16(mode, flags, dtype, reason, warned):
    from vqtool.compute.cpu import CpuFeatures
    from vqtool.compute.precision import amp_choice

    choice = amp_choice(mode, torch.device("cpu"), CpuFeatures(flags=flags))
    assert choice.dtype == dtype and reason in choice.reason
    assert (choice.warning is not None and "slower" in choice.warning) == warned


def test_amp_fp16_on_the_cpu_raises():
    from vqtool.compute.precision import amp_choice
    from vqtool.errors import VQError

    with pytest.raises(VQError, match="fp16 needs a CUDA GPU"):
        amp_choice("fp16", torch.device("cpu"))


def test_cpuinfo_flags_are_read_from_the_flags_line():
    from vqtool.compute.cpu import CpuFeatures, cpuinfo_flags

    text = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni amx_bf16 amx_tile\nbugs\t: x\n"
    flags = cpuinfo_flags(text)
    assert flags == {"avx2", "avx512f", "avx512_vnni", "amx_bf16"}
    line = CpuFeatures(flags=flags, torch_capability="AVX512", threads=2).describe()
    assert line == "CPU amx_bf16 avx512_vnni avx512f avx2 (native bf16), torch AVX512, 2 threads"
    assert cpuinfo_flags("no flags here") == frozenset()


def test_the_default_amp_on_this_cpu_follows_the_detector(run_cli, class_tree):
    """--amp auto trains in what the detected CPU allows, and the log, each epoch and the summary say so."""
    from vqtool.compute.cpu import cpu_features

    result = run_cli("train", class_tree, "--epochs", "1", "--device", "cpu", "--json", "--out", "run")
    expected = "bf16" if cpu_features().native_bf16 else "fp32"
    summary = summary_of(result)
    assert summary["precision"] == expected and "--amp auto" in summary["precision_reason"]
    assert f"precision: {expected} (--amp auto" in result.stderr
    assert re.search(rf"epoch 1/1 .* {expected}\n", result.stderr)
    assert summary["cpu"].startswith("CPU ")


def test_amp_fp16_on_the_cpu_is_a_usage_error(run_cli):
    result = run_cli("train", "--epochs", "1", "--amp", "fp16", "--device", "cpu")
    assert result.exit_code == 2 and "Error: --amp fp16 needs a CUDA GPU" in result.stderr


def test_a_recipe_fills_what_was_not_given_and_is_recorded(run_cli, class_tree):
    result = run_cli("train", class_tree, "--epochs", "2", "--recipe", "basic", "--label-smoothing", "0.2",
                     "--out", "r", "--json")
    summary_of(result)
    assert ("recipe basic: --augment basic --warmup-epochs 1 --scheduler cosine --optimizer adamw "
            "--weight-decay 0.05 (given explicitly: --label-smoothing)") in result.stderr
    config = json.loads(open("r/args.json").read())["args"]["config"]
    assert (config["recipe"], config["augment"], config["label_smoothing"], config["scheduler"]) == \
        ("basic", "basic", 0.2, "cosine")


def test_config_file_supplies_defaults_and_the_command_line_wins(run_cli, class_tree, tmp_path):
    (tmp_path / "opts.yaml").write_text("epochs: 1\nlabel-smoothing: 0.05\nlr: 0.01\nrecipe: basic\n")
    summary_of(run_cli("train", class_tree, "--config", tmp_path / "opts.yaml", "--lr", "0.02", "--out", "c",
                       "--json", "-q"))
    config = json.loads(open("c/args.json").read())["args"]["config"]
    # command line > --config file > --recipe > default
    assert (config["lr"], config["label_smoothing"], config["epochs"], config["augment"]) == (0.02, 0.05, 1, "basic")
    assert config["warmup_epochs"] == 0  # the recipe's warm-up leaves a 1-epoch run one epoch of its schedule
    # a run's own args.json repeats it, with another seed
    summary_of(run_cli("train", "--config", "c/args.json", "--seed", "1", "--out", "d", "--json", "-q"))
    again = json.loads(open("d/args.json").read())["args"]
    assert again["dataset"] == str(class_tree) and again["config"]["seed"] == 1
    assert {k: v for k, v in again["config"].items() if k != "seed"} == \
        {k: v for k, v in config.items() if k != "seed"}


def test_config_file_errors_are_one_line(run_cli, tmp_path):
    (tmp_path / "bad.yaml").write_text("epochs: 1\nlearning_rate: 3\n")
    result = run_cli("train", "--config", tmp_path / "bad.yaml")
    assert result.exit_code == 2 and "not options of vqtool train: learning_rate" in result.stderr
    (tmp_path / "broken.json").write_text("{")
    result = run_cli("train", "--config", tmp_path / "broken.json")
    assert result.exit_code == 2 and "not valid JSON" in result.stderr


@pytest.mark.parametrize("policy", ["trivial", "randaugment", "autoaugment"])
def test_policies_give_each_image_its_own_operations(policy):
    from vqtool.data.policies import PolicyAugmenter

    image = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    batch = image.expand(32, -1, -1, -1).contiguous()
    out = PolicyAugmenter(policy, 24, False, torch.Generator().manual_seed(1))(batch)
    assert out.shape == batch.shape and out.dtype == torch.float32 and out.device == batch.device
    assert 0 <= out.min() and out.max() <= 1
    distinct = {tuple(row.flatten()[:200].round(decimals=4).tolist()) for row in out}
    assert len(distinct) >= 8  # one operation per batch would give one or two distinct images


def test_each_image_is_transformed_from_itself_alone():
    """Label-preserving: an image's output depends only on that image (and its own sampled operation)."""
    from vqtool.data.policies import PolicyAugmenter, apply_ops

    augmenter = PolicyAugmenter("trivial", 16, False, torch.Generator().manual_seed(0))
    x = torch.rand(14, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    ops = torch.arange(14)  # every operation once
    magnitudes = augmenter._magnitudes(ops, torch.full((14,), 20))
    together = apply_ops(x, ops, magnitudes, augmenter.names)
    for i in range(14):
        alone = apply_ops(x[i:i + 1], ops[i:i + 1], magnitudes[i:i + 1], augmenter.names)
        assert torch.allclose(together[i], alone[0], atol=1e-6), augmenter.names[i]
    assert torch.equal(together[augmenter.names.index("Identity")], x[augmenter.names.index("Identity")])


@pytest.mark.parametrize("name, reference", [
    ("Brightness", lambda u, TF: TF.adjust_brightness(u, 1.5)),
    ("Color", lambda u, TF: TF.adjust_saturation(u, 1.5)),
    ("Contrast", lambda u, TF: TF.adjust_contrast(u, 1.5)),
    ("Sharpness", lambda u, TF: TF.adjust_sharpness(u, 1.5)),
    ("AutoContrast", lambda u, TF: TF.autocontrast(u)),
    ("Equalize", lambda u, TF: TF.equalize(u)),
])
def test_colour_operations_agree_with_torchvision(name, reference):
    import torchvision.transforms.v2.functional as TF

    from vqtool.data.policies import COLOUR_OPS

    u = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mine = COLOUR_OPS[name](u.float() / 255, torch.full((4, 1, 1, 1), 0.5))
    assert (mine - reference(u, TF).float() / 255).abs().max() <= 1.5 / 255  # torchvision rounds to uint8


def test_training_with_trivialaugment(run_cli, class_tree):
    summary = summary_of(run_cli("train", class_tree, "--epochs", "1", "--augment", "trivial", "--json", "-q"))
    assert summary["epochs"] == 1 and summary["train_top1"] is not None


def test_finetune_on_cached_features_with_ema_and_a_recipe(run_cli, class_tree, tmp_path):
    """The whole network's checkpoint holds the averaged head when only the head trains on cached features."""
    from safetensors.torch import load_file
    from test_finetune import save_torchvision_weights

    weights = save_torchvision_weights(tmp_path / "resnet18.pth")
    result = run_cli("finetune", class_tree, "--weights", weights, "--imgsz", "32", "--epochs", "2", "--ema", "0.9",
                     "--recipe", "basic", "--augment", "none", "--val-split", "0", "--out", "ft", "--json")
    summary = summary_of(result)
    assert summary["feature_cache"] is True and "recipe basic:" in result.stderr
    averaged = torch.load("ft/state.pt", weights_only=True)["recipe"]["average"]["module"]
    saved = load_file("ft/model.safetensors")
    assert set(averaged) == {"weight", "bias"}  # the head's
    assert all(torch.equal(saved[f"fc.{name}"], averaged[name]) for name in averaged)
    assert json.loads(open("ft/model.json").read())["weights_average"]["decay"] == 0.9


@pytest.mark.slow
def test_compile_logs_the_first_step_cost(run_cli):
    result = run_cli("train", "--epochs", "1", "--compile", "--out", "compiled")
    assert result.exit_code == 0, result.output
    assert "torch.compile: the first training step took" in result.stderr


def test_augment_magnitude_only_where_a_policy_takes_one(run_cli):
    result = run_cli("train", "--epochs", "1", "--augment", "autoaugment", "--augment-magnitude", "5")
    assert result.exit_code == 2 and "--augment-magnitude applies to --augment trivial or randaugment" in result.stderr


def test_checkpoint_inference_stays_fp32_on_the_cpu_unless_bf16_is_asked(run_cli, trained):
    run, data = trained
    auto, off, bf16 = (summary_of(run_cli("eval", run, data, "--amp", mode, "--device", "cpu", "--json", "-q"))
                       for mode in ("auto", "off", "bf16"))
    assert auto["loss"] == off["loss"]  # auto is fp32 on a CPU, whatever the CPU has
    assert bf16["loss"] != off["loss"] and bf16["loss"] == pytest.approx(off["loss"], abs=0.05)
    fp32, half = ([json.loads(line)["confidence"] for line in run_cli(
        "predict", data / "val", "-w", run, "--amp", mode, "--device", "cpu", "--format", "jsonl").stdout.splitlines()]
        for mode in ("auto", "bf16"))
    assert fp32 != half and fp32 == pytest.approx(half, abs=0.05)


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_config_keys_are_the_option_names_users_type(run_cli, class_tree, tmp_path, command):
    """model, out, json, batch-size / batch_size: what --help shows, not the parameters' internal names."""
    model, extra = "cnn-bn", ""
    if command == "finetune":
        import timm
        from safetensors.torch import save_file

        save_file(timm.create_model("resnet10t").state_dict(), str(tmp_path / "w.safetensors"))
        model, extra = "timm/resnet10t", f"weights: {tmp_path / 'w.safetensors'}\nimgsz: 32\n"
    (tmp_path / "c.yaml").write_text(f"model: {model}\nepochs: 1\nbatch-size: 8\nout: {tmp_path / 'byname'}\n"
                                     f"json: true\nquiet: true\n{extra}")
    summary = summary_of(run_cli(command, class_tree, "--config", tmp_path / "c.yaml"))
    args = json.loads((tmp_path / "byname" / "args.json").read_text())["args"]
    assert summary["model"] == model and args["config"]["batch_size"] == 8 and args["config"]["epochs"] == 1
    (tmp_path / "internal.yaml").write_text("model_name: cnn-bn\nbatch_size: 8\nout_dir: x\n")  # still accepted
    assert run_cli(command, "--config", tmp_path / "internal.yaml", "--help").exit_code == 0
