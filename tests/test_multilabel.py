"""Multi-label classification: its data formats, training through classification's loop, thresholds chosen on
val, eval / confusion / predict / export, all on tiny generated images of coloured squares."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import summary_of

COLOURS = {"red": (230, 30, 30), "green": (30, 210, 30), "blue": (30, 30, 230)}
CORNERS = ((0, 0), (12, 0), (0, 12), (12, 12))


def make_squares(root: Path, count: int = 72, seed: int = 0) -> list[tuple[str, list[str]]]:
    """``count`` 24 px images, each with a random subset of the coloured squares in distinct corners."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        image = np.full((24, 24, 3), 120, dtype=np.uint8)
        labels = [name for name in COLOURS if rng.random() < 0.5]
        for name, slot in zip(labels, rng.permutation(4)):
            x, y = CORNERS[slot]
            image[y + 1:y + 11, x + 1:x + 11] = COLOURS[name]
        Image.fromarray(image).save(root / "img" / f"{i}.png")
        rows.append((f"img/{i}.png", labels))
    return rows


def write_list(root: Path, rows, separator="|", name="labels.csv") -> Path:
    path = root / name
    path.write_text("path,labels\n" + "".join(f"{p},{separator.join(labels)}\n" for p, labels in rows))
    return path


@pytest.fixture(scope="module")
def squares_run(tmp_path_factory):
    """A smallcnn trained multi-label on 72 square images (a test split too), and its ONNX export."""
    from click.testing import CliRunner

    from vqtool.cli import cli

    root = tmp_path_factory.mktemp("squares")
    rows = make_squares(root, count=96)
    listing = root / "labels.csv"
    splits = ["train"] * 60 + ["val"] * 18 + ["test"] * 18
    listing.write_text("path,labels,split\n" + "".join(f"{p},{'|'.join(labels)},{split}\n"
                                                       for (p, labels), split in zip(rows, splits)))
    run = root / "run"
    invoke = lambda *args: CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)  # noqa: E731
    result = invoke("train", listing, "--task", "multilabel", "--model", "cnn-bn", "--imgsz", "24", "--epochs", "4",
                    "--lr", "0.01", "--batch-size", "16", "--out", run, "-q", "--json")
    assert result.exit_code == 0, result.output
    exported = invoke("export", run, "-o", root / "model.onnx", "-q", "--json")
    assert exported.exit_code == 0, exported.output
    return run, listing, root, json.loads(result.stdout), json.loads(exported.stdout)


# --- data -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("write", [
    lambda root, rows: write_list(root, rows, "|"),
    lambda root, rows: write_list(root, rows, ";"),
    lambda root, rows: write_list(root, rows, " "),
    lambda root, rows: _tsv(root, rows),
    lambda root, rows: _columns(root, rows),
    lambda root, rows: _text_list(root, rows),
], ids=["pipes", "semicolons", "spaces", "tsv", "one-column-per-label", "text-list"])
def test_every_list_format_gives_the_same_multi_hot_labels(tmp_path, write):
    from vqtool.data import DataOptions
    from vqtool.multilabel.data import load_multilabel

    rows = make_squares(tmp_path, count=12)
    dataset = load_multilabel(str(write(tmp_path, rows)), DataOptions(val_split=0.0))
    assert dataset.classes == ["blue", "green", "red"]
    expected = torch.tensor([[float(name in labels) for name in dataset.classes] for _, labels in rows])
    assert torch.equal(dataset.train.labels, expected)
    assert dataset.train.files == [str(tmp_path / p) for p, _ in rows]


def _tsv(root, rows):
    path = root / "labels.tsv"
    path.write_text("path\tlabels\n" + "".join(f"{p}\t{'|'.join(labels)}\n" for p, labels in rows))
    return path


def _columns(root, rows):
    path = root / "labels.csv"
    path.write_text("path,blue,green,red\n" + "".join(
        f"{p}," + ",".join(str(int(name in labels)) for name in ("blue", "green", "red")) + "\n" for p, labels in rows))
    return path


def _text_list(root, rows):
    path = root / "labels.txt"
    path.write_text("".join(f"{p} {' '.join(labels)}\n" for p, labels in rows))
    return path


def test_image_level_labels_from_a_yolo_data_yaml(tmp_path):
    from vqtool.data import DataOptions
    from vqtool.multilabel.data import load_multilabel

    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
    boxes = {"train/a": "0 0.5 0.5 0.2 0.2\n2 0.3 0.3 0.1 0.1\n0 0.7 0.7 0.1 0.1\n", "train/b": "",
             "val/c": "1 0.5 0.5 0.2 0.2\n"}
    for name, text in boxes.items():
        Image.new("RGB", (32, 32)).save(tmp_path / "images" / f"{name}.png")
        if text:
            (tmp_path / "labels" / f"{name}.txt").write_text(text)
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n  2: cup\n")
    dataset = load_multilabel(str(tmp_path / "data.yaml"), DataOptions(), labels_from="boxes")
    assert dataset.classes == ["cat", "dog", "cup"]
    assert dataset.train.labels.tolist() == [[1, 0, 1], [0, 0, 0]]  # b has no label file: a background image
    assert dataset.val.labels.tolist() == [[0, 1, 0]]


@pytest.mark.parametrize("text, message", [
    ("path,red,blue\nimg/0.png,1,2\n", "'2' in a label column"),
    ("path,labels\n", "lists no images"),
    ("path,labels\nimg/0.png,\n", "no row has a label"),
])
def test_unusable_lists_are_one_usage_error(run_cli, tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    result = run_cli("train", tmp_path / "bad.csv", "--task", "multilabel", "--epochs", "1")
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


# --- training -------------------------------------------------------------------------------------------


def test_a_multilabel_run_records_its_task_and_thresholds(squares_run):
    run, _, _, summary, _ = squares_run
    meta = json.loads((run / "model.json").read_text())
    assert meta["task"] == "multilabel" and meta["classes"] == ["blue", "green", "red"]
    assert len(meta["thresholds"]) == 3 and all(0 < t < 1 for t in meta["thresholds"])
    assert summary["task"] == "multilabel" and summary["val_map"] > 0.8 and summary["test_map"] > 0.8
    assert json.loads((run / "args.json").read_text())["args"]["multilabel"]["loss"] == "bce"


def test_runs_shows_the_val_map_a_multilabel_run_keeps_its_epoch_by(run_cli, squares_run, tmp_path):
    """`vqtool runs` and `runs compare`: the val mAP (and test mAP), never the share of label decisions as top-1."""
    import shutil

    run, _, _, summary, _ = squares_run
    shutil.copytree(run, tmp_path / "runs" / "again")
    [row] = json.loads(run_cli("runs", tmp_path / "runs", "--json").stdout)
    with open(run / "metrics.csv") as file:
        best = [r for r in csv.DictReader(file) if int(r["epoch"]) == row["best_epoch"]][0]
    assert row["task"] == "multilabel" and row["val_map"] == summary["val_map"] == pytest.approx(float(best["val_map"]))
    assert row["val_top1"] is None and row["test_top1"] is None and row["test_map"] == summary["test_map"]
    assert row["val_label_accuracy"] == pytest.approx(float(best["val_top1"]))  # metrics.csv's column, named
    table = run_cli("runs", tmp_path / "runs").stdout
    assert "val_map" in table and "val_top1" not in table and f"{summary['val_map']:.4f}" in table
    compared = json.loads(run_cli("runs", "compare", run, tmp_path / "runs" / "again", "--json").stdout)
    assert compared["metrics"]["val_map"] == [row["val_map"]] * 2 and compared["metrics"]["val_top1"] == [None] * 2
    assert compared["metrics"]["val_label_accuracy"] == [row["val_label_accuracy"]] * 2


def test_a_runs_args_json_replays_its_task_and_options(run_cli, tmp_path):
    """`train --config RUN/args.json` trains the run again: multi-label with its own options (not classification),
    the same val mAP; and a multi-label run still resumes."""
    rows = make_squares(tmp_path, count=40)
    listing = tmp_path / "labels.csv"
    listing.write_text("path,labels,split\n" + "".join(f"{p},{'|'.join(labels)},{'val' if i % 4 == 0 else 'train'}\n"
                                                       for i, (p, labels) in enumerate(rows)))
    first = summary_of(run_cli("train", listing, "--loss", "asl", "--model", "cnn-bn", "--imgsz", "24", "--epochs",
                               "1", "--lr", "0.01", "--batch-size", "16", "--out", tmp_path / "a", "-q", "--json"))
    recorded = json.loads((tmp_path / "a" / "args.json").read_text())["args"]
    assert recorded["task"] == "multilabel" and recorded["multilabel"]["loss"] == "asl"
    again = summary_of(run_cli("train", "--config", tmp_path / "a" / "args.json", "--out", tmp_path / "b", "-q",
                               "--json"))
    meta = json.loads((tmp_path / "b" / "model.json").read_text())
    assert again["task"] == meta["task"] == "multilabel" and len(meta["thresholds"]) == 3
    assert again["val_map"] == first["val_map"] is not None
    assert json.loads((tmp_path / "b" / "args.json").read_text())["args"] == recorded
    resumed = summary_of(run_cli("train", "--resume", tmp_path / "a", "--epochs", "2", "-q", "--json"))
    assert resumed["task"] == "multilabel" and resumed["epochs"] == 2
    assert json.loads((tmp_path / "a" / "model.json").read_text())["task"] == "multilabel"


def test_a_run_recorded_before_args_json_named_its_task_replays_as_the_task_whose_options_it_holds(tmp_path):
    from vqtool.classification.recipes import option_file

    args = {"dataset": "labels.csv", "config": {"epochs": 3}, "multilabel": {"loss": "asl", "labels_from": None}}
    (tmp_path / "args.json").write_text(json.dumps({"command": "train", "argv": [], "args": args}))
    values, from_run = option_file(str(tmp_path / "args.json"))
    assert from_run and values == {"dataset": "labels.csv", "task": "multilabel", "epochs": 3, "loss": "asl"}


def test_a_single_label_runs_args_json_replays_a_single_label_run(run_cli, class_tree, tmp_path):
    first = summary_of(run_cli("train", class_tree, "--model", "smallcnn", "--epochs", "1", "--out", tmp_path / "a",
                               "-q", "--json"))
    assert json.loads((tmp_path / "a" / "args.json").read_text())["args"]["task"] == "classification"
    again = summary_of(run_cli("train", "--config", tmp_path / "a" / "args.json", "--out", tmp_path / "b", "-q",
                               "--json"))
    assert json.loads((tmp_path / "b" / "model.json").read_text())["task"] == "classification"
    assert "val_map" not in again and again["val_top1"] == first["val_top1"]


def test_single_label_options_are_refused_for_multilabel(run_cli, tmp_path):
    listing = write_list(tmp_path, make_squares(tmp_path, count=8))
    result = run_cli("train", listing, "--task", "multilabel", "--label-smoothing", "0.1")
    assert result.exit_code == 2 and "--label-smoothing does not apply to multilabel models" in result.stderr
    result = run_cli("train", listing, "--loss", "asl", "--pos-weight", "auto")
    assert result.exit_code == 2 and "--pos-weight goes with --loss bce" in result.stderr


def test_mixup_mixes_multi_hot_rows_as_it_mixes_the_images():
    from vqtool.classification.config import TrainConfig
    from vqtool.classification.training.mixing import BatchMixer

    mixer = BatchMixer(TrainConfig(mixup=0.4), 3, multi_label=True)
    x = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 0.0)])
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mixed, targets = mixer(x.clone(), labels)
    lam = mixed[0, 0, 0, 0].item()  # image 0 (ones) blended with image 1 (zeros)
    assert torch.allclose(targets[0], lam * labels[0] + (1 - lam) * labels[1])


def test_asymmetric_loss_and_positive_weights():
    from vqtool.multilabel.objective import AsymmetricLoss, positive_weights

    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    assert positive_weights(targets).tolist() == [1.0, 3.0]
    loss = AsymmetricLoss()
    easy_negative = loss(torch.tensor([[-4.0]]), torch.tensor([[0.0]]))
    assert easy_negative.item() == 0.0  # below the 0.05 margin: no cost
    assert loss(torch.tensor([[2.0]]), torch.tensor([[1.0]])) < loss(torch.tensor([[-2.0]]), torch.tensor([[1.0]]))


def test_thresholds_are_chosen_for_the_best_f1():
    from vqtool.multilabel.metrics import best_thresholds, decisions

    probabilities = np.array([[0.9], [0.6], [0.4], [0.3], [0.1]])
    targets = np.array([[1], [1], [0], [1], [0]])
    (threshold,) = best_thresholds(probabilities, targets)
    assert 0.1 < threshold < 0.3  # predicting 0.9, 0.6, 0.4, 0.3 gives F1 6/7, the best
    assert decisions(probabilities, [threshold])[:, 0].tolist() == [True, True, True, True, False]


# --- eval, confusion, predict, export -------------------------------------------------------------------


def test_predicts_labels_reproduce_evals_f1_exactly(run_cli, squares_run):
    from sklearn.metrics import f1_score

    run, listing, root, _, _ = squares_run
    report = summary_of(run_cli("eval", run, "--json"))
    assert report["split"] == "test" and report["n"] == 18 and set(report["per_label"]) == {"blue", "green", "red"}
    test_rows = [row for row in csv.DictReader(listing.open()) if row["split"] == "test"]
    result = run_cli("predict", *[root / row["path"] for row in test_rows], "-w", run, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    classes = ["blue", "green", "red"]
    truth = [[name in row["labels"].split("|") for name in classes] for row in test_rows]
    predicted = [[name in record["labels"] for name in classes] for record in records]
    assert round(f1_score(truth, predicted, average="micro"), 6) == report["micro_f1"]
    scored = [j for j in range(3) if any(row[j] for row in truth) or any(row[j] for row in predicted)]
    assert round(f1_score(truth, predicted, average="macro", labels=scored), 6) == report["macro_f1"]


def test_predicts_threshold_override_and_csv_columns(run_cli, squares_run):
    run, _, root, _, _ = squares_run
    result = run_cli("predict", root / "img", "-w", run, "--format", "csv", "--threshold", "0")
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["path", "frame", "width", "height", "labels", "blue", "green", "red"]
    assert len(rows) == 97 and all(row[4] == "blue|green|red" or set(row[4].split("|")) == {"blue", "green", "red"}
                                   for row in rows[1:])
    refused = run_cli("predict", root / "img" / "0.png", "-w", run, "--sort-into", "sorted")
    assert refused.exit_code == 2 and "--sort-into is for single-label classifiers" in refused.stderr


def test_confusion_names_the_most_missed_and_falsely_predicted_labels(run_cli, squares_run, tmp_path):
    run, _, _, _, _ = squares_run
    result = run_cli("confusion", run, "--json", "--png", tmp_path / "m.png", "--examples", tmp_path / "e.png")
    report = summary_of(result)
    assert report["classes"] == ["blue", "green", "red"] and len(report["matrix"]) == 3
    counts = np.array(report["cooccurrence"])
    assert (counts == counts.T).all() and counts.trace() > 0
    assert {"most_missed", "most_false"} <= report.keys()
    assert (tmp_path / "m.png").stat().st_size > 0 and (tmp_path / "e.png").stat().st_size > 0


def test_the_onnx_export_is_verified_and_keeps_the_thresholds(run_cli, squares_run):
    from vqtool.classification.checkpoints.export_format import read_metadata

    run, _, root, _, exported = squares_run
    assert exported["verified"] is True and exported["task"] == "multilabel"
    document = read_metadata(root / "model.onnx")
    assert document["task"] == "multilabel"
    assert document["thresholds"] == json.loads((run / "model.json").read_text())["thresholds"]
    from_checkpoint = summary_of(run_cli("eval", run, "--json"))
    from_export = summary_of(run_cli("eval", root / "model.onnx", "--json"))
    assert from_export["macro_f1"] == from_checkpoint["macro_f1"]
    assert from_export["map"] == pytest.approx(from_checkpoint["map"], abs=1e-4)
