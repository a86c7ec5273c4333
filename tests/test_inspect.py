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
    from vqtool.classification.training.train import prepare_splits
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

def smooth(seed: int, bright: bool = False, cells: int = 6) -> Image.Image:
    """A 48 px image of smooth light and dark (a random cells × cells field, upscaled): copies of it keep its
    layout and detail where a random image's would vanish."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray((rng.uniform(0, 1, (cells, cells)) * 255).astype(np.uint8)).resize((48, 48),
                                                                                               Image.BICUBIC)
    return Image.fromarray((np.asarray(field) * 0.6 + (90 if bright else 20)).astype(np.uint8)).convert("RGB")


def look_alike(seed: int) -> Image.Image:
    """Image ``seed``'s coarse light and dark with other finer detail over it: alike at a glance, not a copy."""
    mixed = 0.4 * np.asarray(smooth(seed), dtype=float) + 0.6 * np.asarray(smooth(seed + 1000, cells=12), dtype=float)
    return Image.fromarray(mixed.astype(np.uint8))


def test_thumbnails_tell_copies_from_look_alikes():
    import io

    import torch

    from vqtool.inspection import thumbnails

    original = smooth(1)
    recompressed = io.BytesIO()
    original.save(recompressed, "JPEG", quality=50)
    images = [original, original.resize((24, 24), Image.BICUBIC), Image.open(recompressed),
              original.crop((2, 2, 48, 48)), ImageOps.mirror(original), look_alike(1), smooth(2)]
    pixels = torch.stack([torch.tensor(np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)))
                          .permute(2, 0, 1) for image in images])
    thumbs = thumbnails._thumbnails(pixels)
    pairs = [(0, k) for k in range(1, len(images))]
    detail = thumbnails.detail_similarity(thumbs, pairs, mirrored=True)
    layout = thumbnails.layout_similarity(thumbs, pairs, mirrored=True)
    assert min(detail[:4]) >= thumbnails.DETAIL_MATCH > max(detail[4:])  # half size, JPEG, cropped, mirrored
    assert min(layout[:2] + layout[3:4]) >= thumbnails.LAYOUT_MATCH > max(layout[4:])  # not the 5 % crop
    assert thumbnails.detail_similarity(thumbs, [(0, 4)], mirrored=False)[0] < thumbnails.DETAIL_MATCH
    vectors = thumbnails.layout_vectors(thumbs, mirrored=True)
    assert float(vectors[0] @ vectors[4]) == pytest.approx(1.0, abs=1e-5)  # the search finds mirror images


def test_near_copy_is_reported_and_its_look_alike_is_not(tmp_path, run_cli, weights):
    root = tmp_path / "data"
    for label in ("a", "b"):
        (root / "train" / label).mkdir(parents=True)
        for i in range(6):
            smooth(10 * i + (label == "b"), bright=label == "b").save(root / "train" / label / f"{label}{i}.png")
    smooth(0).resize((24, 24), Image.BICUBIC).save(root / "train/a/a0-half.png")  # a copy at half the size
    smooth(10).save(root / "train/b/a1-recompressed.jpg", quality=50)  # a copy under the other class
    look_alike(20).save(root / "train/a/a2-look-alike.png")

    # random features: at 0.5 every pair of a class is an embedding candidate, so the pixels decide
    document = inspect_json(run_cli, weights, root, "--no-label-check", "--near-threshold", 0.5)

    near = {tuple(sorted(names(g))): g["relation"] for g in document["near_duplicates"]}
    assert near == {("train/a/a0-half.png", "train/a/a0.png"): "within class",
                    ("train/a/a1.png", "train/b/a1-recompressed.jpg"): "across classes"}
    assert {"detail_similarity", "layout_similarity", "similarity"} <= set(document["near_duplicates"][0])
    assert document["thresholds"]["near_layout_similarity"] == 0.98



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


# --- multi-label data -------------------------------------------------------------------------------------------

TAGS = ("red", "green", "blue")


def tinted(seed: int, labels) -> Image.Image:
    """A noisy image with the colour channel of each of its labels raised."""
    rng = np.random.default_rng(seed)
    array = 60 + rng.normal(0, 20, (SIZE, SIZE, 3))
    for channel, name in enumerate(TAGS):
        if name in labels:
            array[:, :, channel] += 150
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def make_tags(root: Path, count: int = 40) -> Path:
    """root/tags.csv (path,labels,split): every label set 5 times, the last 8 in val; image 5 shows red and blue and
    is listed as blue only (a missing label); a copy of image 2 (green) is listed as green|blue, and a copy of image
    4 (blue) is in val too."""
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(count):
        labels = [name for bit, name in enumerate(TAGS) if i >> bit & 1]
        tinted(i, labels).save(root / "img" / f"{i}.png")
        rows.append([f"img/{i}.png", labels, "val" if i >= count - 8 else "train"])
    rows[5][1] = ["blue"]
    shutil.copyfile(root / "img/2.png", root / "img/2-copy.png")
    rows.append(["img/2-copy.png", ["green", "blue"], "train"])
    shutil.copyfile(root / "img/4.png", root / "img/4-leak.png")
    rows.append(["img/4-leak.png", ["blue"], "val"])
    (root / "tags.csv").write_text("path,labels,split\n" + "".join(f"{p},{'|'.join(labels)},{split}\n"
                                                                   for p, labels, split in rows))
    return root / "tags.csv"


def test_multilabel_conflicting_copies_a_missing_label_balance_list_and_report(tmp_path, run_cli, weights):
    listing = make_tags(tmp_path / "data")
    before = tree_digest(listing.parent)
    document = inspect_json(run_cli, weights, listing, "--task", "multilabel", "--near-threshold", 0.999,
                            "--report", tmp_path / "report", "--write-list", tmp_path / "clean.csv")

    assert tree_digest(listing.parent) == before and document["task"] == "multilabel"
    exact = {tuple(Path(m["image"]).name for m in g["images"]): (g["relation"], [m["labels"] for m in g["images"]])
             for g in document["exact_duplicates"]}
    assert exact == {("2.png", "2-copy.png"): ("conflicting labels", [["green"], ["blue", "green"]]),
                     ("4.png", "4-leak.png"): ("across splits", [["blue"], ["blue"]])}
    issues = {Path(f["image"]).name: (f["labels"], f["suggested"], f["missing"], f["doubtful"])
              for f in document["label_issues"]}
    assert issues == {"5.png": (["blue"], ["blue", "red"], ["red"], []),  # the missing label
                      "2-copy.png": (["blue", "green"], ["green"], [], ["blue"])}  # the copy's extra label
    assert document["label_check"]["done"] and document["label_check"]["folds"] == 5
    assert document["splits"]["train"]["classes"] == {"blue": 17, "green": 17, "red": 15}
    assert document["splits"]["train"]["without_labels"] == 4 and document["splits"]["val"]["without_labels"] == 1
    assert document["balance"]["without_labels"] == 5 and document["balance"]["largest"] == "blue"

    with open(tmp_path / "clean.csv") as file:
        rows = {Path(row["path"]).name: (row["labels"], row["split"]) for row in csv.DictReader(file)}
    assert len(rows) == 42 - 4 and not {"2.png", "2-copy.png", "5.png", "4.png"} & set(rows)
    assert rows["4-leak.png"] == ("blue", "val") and rows["3.png"] == ("green|red", "train") and rows["0.png"][0] == ""
    from vqtool.data import DataOptions
    from vqtool.multilabel.data import load_multilabel

    clean = load_multilabel(str(tmp_path / "clean.csv"), DataOptions())  # what train --task multilabel reads
    assert clean.classes == ["blue", "green", "red"] and len(clean.train) + len(clean.val) == 38
    page = (tmp_path / "report" / "index.html").read_text()
    assert "conflicting labels" in page and "suggested <b>blue|red</b>" in page


def test_multilabel_labels_from_a_data_yaml_boxes(tmp_path, run_cli, weights):
    """A data.yaml's image-level labels: a copy whose boxes differ is a conflict, label files are checked."""
    root = tmp_path / "data"
    boxes = {"train/a": "0 0.5 0.5 0.2 0.2\n", "train/b": "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n", "train/c": "",
             "val/d": "1 0.5 0.5 0.2 0.2\n", "val/e": "7 0.5 0.5 0.2 0.2\n"}
    for i, (name, text) in enumerate(boxes.items()):
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "labels" / name).parent.mkdir(parents=True, exist_ok=True)
        photo(i, i % 2 == 1).save(root / "images" / f"{name}.png")
        (root / "labels" / f"{name}.txt").write_text(text)
    shutil.copyfile(root / "images/train/a.png", root / "images/val/a-again.png")  # its own labels file: none
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n")

    document = inspect_json(run_cli, weights, root / "data.yaml", "--labels-from", "boxes", "--no-label-check")
    assert document["task"] == "multilabel" and document["classes"] == ["cat", "dog"]
    [group] = document["exact_duplicates"]
    assert [m["labels"] for m in group["images"]] == [["cat"], []]
    assert group["relation"] == "across splits, conflicting labels" and group["across_classes"]
    assert document["splits"]["train"]["classes"] == {"cat": 2, "dog": 1}
    assert document["balance"]["without_labels"] == 3  # c, a-again, and e (its one box has no class 7)
    assert [Path(f["image"]).name for f in document["label_files"]] == ["e.png"]


@pytest.mark.parametrize("options, says", [
    (("--task", "classification", "--labels-from", "boxes"), "--labels-from boxes makes multi-label data"),
    (("--task", "multilabel"), "multi-label data is a CSV/TSV or text list"),
    (("--labels-from", "boxes"), "--labels-from boxes reads the image-level labels of a YOLO data.yaml"),
])
def test_multilabel_usage_errors_are_one_line(tmp_path, run_cli, options, says):
    root = make_dataset(tmp_path / "data", per_class=2, val=1)
    result = run_cli("inspect", root, "--model", "cnn-bn", *options)
    assert result.exit_code == 2 and says in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_one_vs_rest_out_of_fold_probabilities_follow_each_label():
    from vqtool.inspection.labels import label_issues, out_of_fold_probabilities

    rng = np.random.default_rng(0)
    labels = (np.arange(60)[:, None] >> np.arange(3)[None, :] & 1).astype(np.int64)  # every label set
    features = (labels * 2.0 - 1 + rng.normal(0, 0.3, labels.shape)).astype(np.float32)
    probabilities = out_of_fold_probabilities(features, labels)
    assert probabilities.shape == (60, 3) and ((probabilities >= 0.5) == labels).all()
    flipped = labels.copy()
    flipped[7, 1] = 0  # image 7 has label 1, not listed
    assert label_issues(flipped, out_of_fold_probabilities(features, flipped))[0].tolist() == [7]


def test_multilabel_lists_of_every_format_are_read_as_training_reads_them(tmp_path):
    """A labels column, one 0/1 column per label and a text list: the same label sets (the same reader as `train
    --task multilabel`)."""
    from vqtool.data import DataOptions
    from vqtool.inspection.job import _load
    from vqtool.inspection.options import InspectOptions

    rows = {f"img/{i}.png": [name for bit, name in enumerate(TAGS) if i >> bit & 1] for i in range(8)}
    (tmp_path / "img").mkdir()
    for i, path in enumerate(rows):
        tinted(i, rows[path]).save(tmp_path / path)
    (tmp_path / "pipes.csv").write_text("path,labels\n" + "".join(f"{p},{'|'.join(l)}\n" for p, l in rows.items()))
    (tmp_path / "columns.csv").write_text("path,blue,green,red\n" + "".join(
        f"{p}," + ",".join(str(int(name in l)) for name in ("blue", "green", "red")) + "\n" for p, l in rows.items()))
    (tmp_path / "list.txt").write_text("".join(f"{p} {' '.join(l)}\n" for p, l in rows.items()))
    read = {name: _load(str(tmp_path / name), DataOptions(val_split=0.0), InspectOptions(task="multilabel"))[0]
            for name in ("pipes.csv", "columns.csv", "list.txt")}
    expected = [[float(name in labels) for name in ("blue", "green", "red")] for labels in rows.values()]
    for name, dataset in read.items():
        assert dataset.classes == ["blue", "green", "red"] and dataset.train.labels.tolist() == expected, name
        assert dataset.train.files == [str(tmp_path / p) for p in rows], name
