import csv
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import ASSETS, make_class_tree, requires_assets, summary_of


@pytest.mark.slow  # over 30 s in the default suite (measured with --durations)
def test_default_train_reaches_95_percent_on_digits(run_cli):
    summary = summary_of(run_cli("train", "--json", "-q", "--out", "run"))
    assert summary["test_top1"] >= 0.95
    assert summary["epochs"] == 10
    assert {"run_dir", "train_top1", "val_top1", "seconds"} <= summary.keys()
    run = Path("run")
    for name in ("model.safetensors", "model.json", "metrics.csv", "curves.png", "args.json"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    meta = json.loads((run / "model.json").read_text())
    assert meta["architecture"] == "smallcnn" and meta["classes"] == [str(d) for d in range(10)]
    assert meta["preprocess"]["size"] == 28 and meta["metrics"]["test_top1"] == summary["test_top1"]


def test_resume_continues_exactly_where_it_stopped(run_cli, monkeypatch):
    from vqtool.classification.training.run import TrainingRun

    straight = summary_of(run_cli("train", "--epochs", "4", "--json", "-q", "--out", "a"))
    commit = TrainingRun.commit

    def interrupted_after_epoch_2(self, state, **files):
        commit(self, state, **files)
        if state.epoch == 2:
            raise KeyboardInterrupt  # as Ctrl-C right after the epoch's state was written

    monkeypatch.setattr(TrainingRun, "commit", interrupted_after_epoch_2)
    interrupted = run_cli("train", "--epochs", "4", "--json", "-q", "--out", "b")
    assert interrupted.exit_code == 130 and "Aborted" in interrupted.stderr
    # where it stands, and the exact command that continues it; its curves are drawn up to that epoch
    assert interrupted.stderr.strip() == ("Aborted: b holds epoch 2 of 4 (curves.png drawn); continue with: "
                                          "vqtool train --resume b")
    assert Path("b/curves.png").is_file()
    monkeypatch.setattr(TrainingRun, "commit", commit)
    resumed = summary_of(run_cli("train", "--resume", "b", "--json", "-q"))
    assert resumed["epochs"] == 4
    assert resumed["val_top1"] == pytest.approx(straight["val_top1"], abs=1e-6)
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-4)
    assert len(list(csv.DictReader(open("b/metrics.csv")))) == 4


def test_resume_of_a_finished_run_says_how_to_extend(run_cli):
    summary_of(run_cli("train", "--epochs", "1", "--json", "-q", "--out", "done"))
    result = run_cli("train", "--resume", "done")
    assert result.exit_code == 2 and "already finished 1 of 1 epochs" in result.stderr


def test_existing_run_folder_is_never_overwritten(run_cli, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    result = run_cli("train", "--out", "taken", "--epochs", "1")
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_class_folders_with_simplecnn(run_cli, class_tree):
    summary = summary_of(run_cli("train", class_tree, "--model", "simplecnn", "--epochs", "3", "--json", "-q",
                                 "--augment", "basic"))
    assert summary["val_top1"] >= 0.8
    assert "test_top1" not in summary


@pytest.mark.parametrize("model", ["mobilenet_v3_small", "timm/resnet10t"])
def test_library_architectures_train_by_name(run_cli, class_tree, model):
    summary = summary_of(run_cli("train", class_tree, "--model", model, "--epochs", "1", "--batch-size", "8",
                                 "--json", "-q", "--out", "lib"))
    meta = json.loads(Path("lib/model.json").read_text())
    assert meta["architecture"] == model and meta["preprocess"]["size"] == 32  # the tree's own size
    assert summary["epochs"] == 1


def test_single_tree_is_split_stratified(run_cli, tmp_path):
    tree = make_class_tree(tmp_path / "one", per_class=10, splits=())
    summary_of(run_cli("train", tree, "--model", "cnn-bn", "--imgsz", "32", "--epochs", "1", "--json", "-q",
                       "--val-split", "0.2", "--out", "one-run"))
    logged = json.loads(Path("one-run/args.json").read_text())
    assert logged["args"]["data"]["val_split"] == 0.2


def test_unreadable_images_are_skipped_with_a_warning_or_fatal_with_strict(run_cli, class_tree):
    bad = class_tree / "train" / "vertical" / "broken.png"
    good = (class_tree / "train" / "vertical" / "vertical_0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 3])
    (class_tree / "train" / "vertical" / "notes.txt").write_text("not an image")
    result = run_cli("train", class_tree, "--model", "cnn-bn", "--imgsz", "32", "--epochs", "1", "-q")
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image file(s)" in result.stderr and "broken.png" in result.stderr
    strict = run_cli("train", class_tree, "--model", "cnn-bn", "--imgsz", "32", "--epochs", "1", "--strict")
    assert strict.exit_code == 1
    error = strict.stderr.strip().splitlines()[-1]  # after the store's log line (the pixels were decoded above)
    assert error.startswith("Error: 1 unreadable image file(s)") and "Traceback" not in strict.output


@pytest.mark.parametrize("setup, message", [
    (lambda root: root.mkdir(), "no class folders"),
    (lambda root: (root / "cats").mkdir(parents=True), "class folder has no images"),
])
def test_bad_folders_get_one_clear_line(run_cli, tmp_path, setup, message):
    root = tmp_path / "bad"
    setup(root)
    result = run_cli("train", root)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_train_and_val_class_sets_must_match(run_cli, tmp_path):
    root = make_class_tree(tmp_path / "mismatch", per_class=2, splits=("train",))
    make_class_tree(root, per_class=2, splits=("val",), classes=("diagonal",))
    result = run_cli("train", root)
    assert result.exit_code == 2
    assert "missing horizontal, vertical" in result.stderr and "extra diagonal" in result.stderr


def test_unknown_names_suggest_close_matches(run_cli):
    result = run_cli("train", "--model", "smalcnn")
    assert result.exit_code == 2 and "did you mean: smallcnn" in result.stderr
    result = run_cli("train", "fashion-mnst")
    assert result.exit_code == 2 and "did you mean: fashion-mnist" in result.stderr


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files_from_data_dir(run_cli, tmp_path):
    raw = tmp_path / "fm"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 50)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 20, (n, 28, 28))
        images[:, :, :] += (labels * 22)[:, None, None]  # brightness encodes the class
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    summary = summary_of(run_cli("train", "fashion-mnist", "--data-dir", raw, "--epochs", "6", "--batch-size", "16",
                                 "--json", "-q", "--out", "fm-run"))
    assert summary["test_top1"] >= 0.5  # chance is 0.1; the brightness of each class sets it apart
    meta = json.loads(Path("fm-run/model.json").read_text())
    assert meta["classes"][0] == "T-shirt/top" and meta["preprocess"]["mean"] == [0.286]


def test_missing_classic_files_name_the_files_and_folder(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr("vqtool.data.sources._download", lambda name, root: None)
    result = run_cli("train", "fashion-mnist", "--data-dir", tmp_path / "empty")
    assert result.exit_code == 1
    assert "train-images-idx3-ubyte.gz" in result.stderr and "FashionMNIST/raw" in result.stderr


@requires_assets
@pytest.mark.assets
@pytest.mark.slow
def test_fashion_mnist_real_three_epochs(run_cli):
    data = Path(ASSETS) / "data" / "fashion-mnist"
    summary = summary_of(run_cli("train", "fashion-mnist", "--data-dir", data, "--model", "smallcnn",
                                 "--epochs", "3", "--batch-size", "128", "--json", "-q", "--out", "fm"))
    assert summary["test_top1"] >= 0.89
    confusion = json.loads(run_cli("confusion", "fm", "--json", "-q").stdout)
    top3 = {(p["true"], p["predicted"]) for p in confusion["pairs"][:3]}
    clothes = {"Shirt", "T-shirt/top", "Coat", "Pullover"}
    assert any({a, b} in ({"Shirt", "T-shirt/top"}, {"Shirt", "Coat"}, {"Pullover", "Coat"}) for a, b in top3), top3
    assert all(a in clothes or b in clothes for a, b in top3)


def test_ctrl_c_in_a_finetune_names_its_resume_command_and_before_the_first_epoch_says_so(run_cli, class_tree,
                                                                                        monkeypatch, tmp_path):
    import timm
    from safetensors.torch import save_file

    from vqtool.classification.training import loop

    save_file(timm.create_model("resnet10t").state_dict(), str(tmp_path / "w.safetensors"))

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "run_epoch", ctrl_c)
    result = run_cli("finetune", class_tree, "--model", "timm/resnet10t", "--weights", tmp_path / "w.safetensors",
                     "--imgsz", "32", "--epochs", "2", "--out", "tune dir")
    assert result.exit_code == 130
    assert result.stderr.strip().endswith("Aborted: 'tune dir' holds no epoch yet (interrupted before the first "
                                          "ended): remove it and start again")


def test_curves_of_one_epoch_name_the_run_and_show_whole_epochs(run_cli, drawn_figures):
    summary_of(run_cli("train", "--epochs", "1", "--json", "-q", "--out", "one"))
    curves = drawn_figures[-1]
    assert curves["title"] == "one: smallcnn on digits"
    for panel in curves["axes"]:
        assert panel["xlabel"] == "epoch" and panel["xticks"] == ["1"] and panel["xlim"] == (0.5, 1.5)
    assert [panel["ylabel"] for panel in curves["axes"]] == ["loss", "accuracy"]


def test_the_log_says_the_first_epochs_lr_is_the_warm_up_start(run_cli):
    result = run_cli("train", "--epochs", "1", "--out", "lr")
    assert result.exit_code == 0
    assert ("LR schedule: one-cycle from 8.00e-05 (the peak / 25) up to the peak 2.00e-03 at 30 % of its steps"
            in result.stderr) and "lr 8.00e-05" in result.stderr
    warm = run_cli("train", "--epochs", "2", "--scheduler", "cosine", "--warmup-epochs", "1", "--out", "warm")
    assert "LR schedule: a linear warm-up from 2.00e-05 to 2.00e-03 over 1 epoch, then cosine" in warm.stderr
