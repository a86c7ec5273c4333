"""vqtool inspect: exact findings on datasets made here, hostile inputs, and the dataset left untouched.

The backbone is the built-in cnn-bn with random weights saved to a file (the model's quality does not matter
here: copies are found from pixel hashes and identical embeddings, and the two classes differ in brightness,
which any random network's pooled features follow).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

SIZE = 24


def photo(seed: int, bright: bool) -> Image.Image:
    """A distinct noisy image: dark for class a, bright for class b."""
    rng = np.random.default_rng(seed)
    base = 190 if bright else 50
    array = np.clip(base + rng.normal(0, 30, (SIZE, SIZE, 3)) + rng.normal(0, 25, (1, 1, 3)), 0, 255)
    return Image.fromarray(array.astype(np.uint8))


def make_dataset(root: Path, per_class: int = 12, val: int = 4) -> Path:
    """root/{train,val}/{a,b}/*.png, every image different."""
    seed = 0
    for split, count in (("train", per_class), ("val", val)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                seed += 1
                photo(seed, label == "b").save(folder / f"{label}{i}.png")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    import torch
    from safetensors.torch import save_file

    from vqtool.registry import get_model

    torch.manual_seed(0)
    model = get_model("cnn-bn").build(2, 3)
    path = tmp_path_factory.mktemp("weights") / "cnn-bn.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def inspect_json(run_cli, weights, folder, *more) -> dict:
    result = run_cli("inspect", folder, "--model", "cnn-bn", "--weights", weights, "--imgsz", SIZE, "--json",
                     "--quiet", *more)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def tree_digest(root: Path) -> str:
    """Every path, kind, size, modification time and content under ``root`` (links not followed)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        status = os.lstat(path)
        digest.update(f"{path}|{status.st_mode}|{status.st_size}|{status.st_mtime_ns}".encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
        elif path.is_symlink():
            digest.update(os.readlink(path).encode())
    return digest.hexdigest()


def names(group: dict) -> list[str]:
    return [Path(m["image"]).relative_to(Path(m["image"]).parents[2]).as_posix() for m in group["images"]]


def test_exact_duplicates_within_across_classes_and_splits_flips_and_mirrored_copies(tmp_path, run_cli, weights):
    root = make_dataset(tmp_path / "data")
    shutil.copyfile(root / "train/a/a0.png", root / "train/a/a0-copy.png")  # within a class
    shutil.copyfile(root / "train/a/a1.png", root / "train/b/a1-in-b.png")  # across classes
    shutil.copyfile(root / "train/b/b2.png", root / "val/b/b2-leak.png")  # across splits
    ImageOps.mirror(Image.open(root / "train/b/b3.png")).save(root / "train/b/b3-mirrored.png")  # a near copy
    (root / "train/a/a5.png").rename(root / "train/b/a5-flipped.png")  # a dark image labelled b
    before = tree_digest(root)

    document = inspect_json(run_cli, weights, root, "--report", tmp_path / "report", "--write-list",
                            tmp_path / "clean.csv", "--near-threshold", 0.999)  # random features: only true copies

    assert tree_digest(root) == before  # nothing in the dataset's folder written or changed
    exact = {tuple(names(g)): (g["relation"], g["across_classes"], g["across_splits"])
             for g in document["exact_duplicates"]}
    assert exact == {("train/a/a0-copy.png", "train/a/a0.png"): ("within class", False, False),
                     ("train/a/a1.png", "train/b/a1-in-b.png"): ("across classes", True, False),
                     ("train/b/b2.png", "val/b/b2-leak.png"): ("across splits", False, True)}
    near = {tuple(sorted(names(g))): g["similarity"] for g in document["near_duplicates"]}
    assert near[("train/b/b3-mirrored.png", "train/b/b3.png")] == pytest.approx(1.0, abs=1e-4)
    assert not set(near) & {tuple(sorted(pair)) for pair in exact}  # exact copies are not reported twice
    flagged = {Path(f["image"]).name: f["suggested"] for f in document["label_issues"]}
    assert flagged == {"a5-flipped.png": "a", "a1-in-b.png": "a"}  # the flip, and the dark copy labelled b
    assert document["label_check"]["done"] and document["counts"]["exact_duplicates"] == 3
    assert document["label_check"]["cleanlab_candidates"] >= len(flagged)
    assert document["splits"]["train"]["classes"] == {"a": 12, "b": 15}
    assert document["splits"]["val"]["images"] == 9 and document["unreadable"] == []

    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 2 * 3 + 2 and "across splits" in page and "suggested" in page
    with open(tmp_path / "clean.csv") as file:
        rows = list(csv.DictReader(file))
    listed = {Path(row["path"]).relative_to(root).as_posix() for row in rows}
    left_out = {"train/a/a0.png", "train/a/a1.png", "train/b/a1-in-b.png", "train/b/b2.png", "train/b/a5-flipped.png"}
    assert len(rows) == 36 - len(left_out) - 1 and not listed & left_out  # and b3 or its mirror
    assert {"train/a/a0-copy.png", "val/b/b2-leak.png"} <= listed  # the held-out copy stays
    assert len({"train/b/b3.png", "train/b/b3-mirrored.png"} & listed) == 1
    from vqtool.data import load_dataset

    assert len(load_dataset(str(tmp_path / "clean.csv")).train) == len([r for r in rows if r["split"] == "train"])


def test_second_run_reads_the_stores_and_prints_the_findings(tmp_path, run_cli, weights):
    root = make_dataset(tmp_path / "data", per_class=6, val=2)
    shutil.copyfile(root / "train/a/a0.png", root / "val/b/a0.png")
    first = inspect_json(run_cli, weights, root, "--no-label-check")
    assert [names(g) for g in first["exact_duplicates"]] == [["train/a/a0.png", "val/b/a0.png"]]
    assert first["exact_duplicates"][0]["relation"] == "across splits and classes"
    result = run_cli("inspect", root, "--model", "cnn-bn", "--weights", weights, "--imgsz", SIZE, "--no-label-check")
    assert result.exit_code == 0, result.output
    assert "features read from the store" in result.stderr and "nothing decoded" in result.stderr
    assert "1 exact duplicates" in result.stdout and "across splits and classes" in result.stdout
    assert "Traceback" not in result.output


@pytest.fixture
def head_fits(monkeypatch) -> list:
    """Every fit of the label head, counted through the real fitting function."""
    from vqtool.inspection import labels

    fits, fit = [], labels._logistic_regression
    monkeypatch.setattr(labels, "_logistic_regression", lambda *args: fits.append(1) or fit(*args))
    return fits


def test_unchanged_second_run_reuses_the_out_of_fold_probabilities(tmp_path, run_cli, weights, head_fits):
    root = make_dataset(tmp_path / "data", per_class=6, val=2)
    (root / "train/a/a5.png").rename(root / "train/b/a5-flipped.png")
    first = inspect_json(run_cli, weights, root)
    assert len(head_fits) == first["label_check"]["folds"] == 5
    result = run_cli("inspect", root, "--model", "cnn-bn", "--weights", weights, "--imgsz", SIZE, "--json")
    assert result.exit_code == 0, result.output
    second = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(head_fits) == 5 and "out-of-fold probabilities read from" in result.stderr  # nothing fitted again
    assert [Path(f["image"]).name for f in first["label_issues"]] == ["a5-flipped.png"]
    for key in ("label_issues", "label_check", "outliers", "near_duplicates", "exact_duplicates"):
        assert second[key] == first[key]
    from vqtool.data.store import entries

    assert [e["what"] for e in entries() if e["kind"] == "probabilities"] == ["the out-of-fold probabilities"]


def other_weights(tmp_path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    from vqtool.registry import get_model

    torch.manual_seed(1)
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in get_model("cnn-bn").build(2, 3).state_dict().items()}, str(path))
    return path


def write_list(root: Path, labels: dict[str, str]) -> Path:
    with open(root / "labels.csv", "w", newline="") as file:
        csv.writer(file).writerows([("path", "label"), *sorted(labels.items())])
    return root / "labels.csv"


def test_the_label_head_is_fitted_again_when_what_it_depends_on_changes(tmp_path, run_cli, weights, head_fits):
    """Each run changes one thing from the run before it (the list's files stay put, so that a changed label leaves
    the embeddings as they were), and each fits the head again."""
    root = tmp_path / "data"
    root.mkdir()
    labels = {}
    for i in range(12):
        photo(i, i % 2 == 1).save(root / f"{i}.png")
        labels[f"{i}.png"] = "ab"[i % 2]
    listed = write_list(root, labels)
    inspect_json(run_cli, weights, listed)
    fits = len(head_fits)
    changes = {"a changed label": lambda: write_list(root, {**labels, "0.png": "b"}) and (),
               "a changed file": lambda: photo(99, True).save(root / "3.png") or (),
               "another seed": lambda: ("--seed", 7),
               "another backbone": lambda: ("--seed", 7, "--weights", other_weights(tmp_path)),
               "no store": lambda: ("--seed", 7, "--no-cache-store")}
    for change, options in changes.items():
        result = run_cli("inspect", listed, "--model", "cnn-bn", "--weights", weights, "--imgsz", SIZE, "--json",
                         *options())
        assert result.exit_code == 0, result.output
        assert len(head_fits) > fits and "out-of-fold probabilities read from" not in result.stderr, change
        fits = len(head_fits)
        if change == "a changed label":
            assert "features read from the store" in result.stderr  # the embeddings are those of the first run

def corrupt(root: Path) -> None:
    for path in (root / "train/b").iterdir():
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 10)


def truncated(root: Path) -> None:
    data = (root / "train/a/a0.png").read_bytes()
    (root / "train/a/a0.png").write_bytes(data[: len(data) // 2])


def link_loop(root: Path) -> None:
    os.symlink(root / "train/a/loop2.png", root / "train/a/loop1.png")
    os.symlink(root / "train/a/loop1.png", root / "train/a/loop2.png")
    os.symlink(root / "train/a", root / "train/a/folder-loop")


def empty_class(root: Path) -> None:
    (root / "train/c").mkdir()


def single_image(root: Path) -> None:
    shutil.rmtree(root / "val")
    shutil.rmtree(root / "train/b")
    for path in sorted((root / "train/a").iterdir())[1:]:
        path.unlink()


def one_class(root: Path) -> None:
    shutil.rmtree(root / "train/b")
    shutil.rmtree(root / "val/b")


def not_images(root: Path) -> None:
    for path in root.rglob("*.png"):
        path.write_bytes(b"not an image")


HOSTILE = [
    # (case, change, expected exit code, what the output must say); the all-corrupt class: the test after this one
    ("truncated file", truncated, 0, "a0.png"),
    ("symlink loops", link_loop, 0, "loop1.png"),
    ("empty class", empty_class, 2, "Error: "),
    ("a single image", single_image, 0, "no label check: fewer than two classes"),
    ("one class", one_class, 0, "no label check: fewer than two classes"),
    ("nothing readable", not_images, 1, "Error: "),
]


@pytest.mark.parametrize("case, change, code, says", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_inputs_give_a_report_or_one_error_line(tmp_path, run_cli, weights, case, change, code, says):
    root = make_dataset(tmp_path / "data", per_class=5, val=2)
    change(root)
    before = tree_digest(root)
    result = run_cli("inspect", root, "--model", "cnn-bn", "--weights", weights, "--imgsz", SIZE,
                     *(() if "label" in says else ("--no-label-check",)))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and says in result.output
    if code:
        assert [line for line in result.output.splitlines() if line.startswith("Error:")] == \
            [result.output.strip().splitlines()[-1]]
    assert tree_digest(root) == before


def test_all_corrupt_class_is_named_in_the_findings(tmp_path, run_cli, weights):
    root = make_dataset(tmp_path / "data", per_class=5, val=2)
    corrupt(root)
    before = tree_digest(root)
    document = inspect_json(run_cli, weights, root)
    assert tree_digest(root) == before
    assert sorted(Path(f["image"]).name for f in document["unreadable"]) == [f"b{i}.png" for i in range(5)]
    assert {f["class"] for f in document["unreadable"]} == {"b"}
    assert document["splits"]["train"]["classes"] == {"a": 5, "b": 0}
    assert document["balance"]["empty"] == [] and document["splits"]["train"]["unreadable"] == 5


@pytest.mark.parametrize("option", ["--write-list", "--report"])
def test_outputs_inside_the_dataset_are_refused(tmp_path, run_cli, weights, option):
    root = make_dataset(tmp_path / "data", per_class=3, val=1)
    before = tree_digest(root)
    result = run_cli("inspect", root, "--model", "cnn-bn", "--weights", weights, option, root / "train" / "out")
    assert result.exit_code == 2 and "inside the dataset's folder" in result.output
    assert tree_digest(root) == before


def test_default_model_without_weights_is_one_error_line(tmp_path, run_cli, monkeypatch):
    monkeypatch.setattr("vqtool.models.weights.reachable", lambda host, port=443: False)  # offline, at once
    root = make_dataset(tmp_path / "data", per_class=3, val=1)
    result = run_cli("inspect", root)
    assert result.exit_code == 1 and "--weights" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_train_hints_at_copies_across_splits(tmp_path):
    from vqtool.classification.train import prepare_splits
    from vqtool.data import DataOptions, load_dataset
    from vqtool.data.pipeline import Preprocess

    root = make_dataset(tmp_path / "data", per_class=4, val=2)
    shutil.copyfile(root / "train/a/a0.png", root / "val/a/a0-again.png")
    warnings = []

    class Recorder:
        debug = False

        def log(self, message):
            pass

        def warn(self, message):
            warnings.append(message)

        def progress(self, description, total):
            import contextlib

            return contextlib.nullcontext(lambda n=1: None)

    preprocess = Preprocess(size=SIZE, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    prepare_splits(load_dataset(str(root)), preprocess, DataOptions(), Recorder())
    assert warnings == [f"exact duplicates across splits: 1 val image also in train (they inflate the held-out "
                        f"accuracy); `vqtool inspect {root}` names them"]
    warnings.clear()
    (root / "val/a/a0-again.png").unlink()
    prepare_splits(load_dataset(str(root)), preprocess, DataOptions(), Recorder())
    assert warnings == []


def test_near_pairs_in_blocks_match_the_whole_product():
    import torch

    from vqtool.inspection.duplicates import near_pairs

    torch.manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(300, 8), dim=1)
    whole = near_pairs(vectors, threshold=0.8, neighbours=5)
    assert whole and near_pairs(vectors, threshold=0.8, neighbours=5, block_bytes=4 * 300 * 7) == whole
    similarities = vectors @ vectors.T
    i, j, s = whole[0]
    assert i < j and s == pytest.approx(float(similarities[i, j]), abs=1e-4) and s >= 0.8


def test_label_candidates_leave_out_the_heads_own_confusions():
    """cleanlab proposes both a flip and a weak head's look-alikes; only the flip's label is below chance."""
    from vqtool.inspection.labels import cleanlab_issues, label_issues

    labels = np.repeat([0, 1, 2], 20)
    probabilities = np.tile([0.96, 0.02, 0.02], (60, 1))
    probabilities[20:40] = [0.02, 0.60, 0.38]  # classes 1 and 2 look alike to the head: it is unsure of them all
    probabilities[40:60] = [0.02, 0.38, 0.60]
    probabilities[20:24] = [0.02, 0.35, 0.63]  # class 1 images it takes for class 2: look-alikes, no flips
    probabilities[5] = [0.01, 0.97, 0.02]  # labelled 0, plainly a 1: a flip
    probabilities[45] = [0.97, 0.01, 0.02]  # labelled 2, plainly a 0: a flip

    proposed = set(cleanlab_issues(labels, probabilities).tolist())
    assert proposed == {5, 45, 20, 21, 22, 23}  # cleanlab alone counts the look-alikes too
    issues, count = label_issues(labels, probabilities)
    assert issues.tolist() == [5, 45] and count == 6  # the look-alikes' given label is above chance (1/3)


@pytest.mark.parametrize("mode, width, height, issues", [
    ("RGB", 400, 300, []),
    ("L", 400, 300, ["mode L"]),
    ("I;16", 400, 300, ["mode I;16 (16-bit)"]),
    ("RGB", 20, 30, ["tiny 20x30"]),
    ("RGB", 1600, 300, ["aspect 5.3:1"]),
    ("CMYK", 12, 60, ["mode CMYK", "tiny 12x60", "aspect 5.0:1"]),
])
def test_odd_files_among_the_datasets_own(tmp_path, mode, width, height, issues):
    from vqtool.inspection.files import Header, read_header

    assert Header(mode, width, height, "PNG").oddities("RGB", usual_side=300) == issues
    assert Header("RGB", 28, 28, "PNG").oddities("RGB", usual_side=28) == []  # a dataset of small images
    Image.new("RGB", (40, 10)).save(tmp_path / "wide.png")
    assert read_header(str(tmp_path / "wide.png")) == Header("RGB", 40, 10, "PNG")
    (tmp_path / "bad.png").write_bytes(b"nothing")
    assert read_header(str(tmp_path / "bad.png")) is None
