"""The store on disk: decoded pixels and backbone features reused, invalidated, resumed and shared; CSV datasets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_class_tree, stripes, summary_of

# A process that decodes the train split of a class tree through the store and prints what it was told; with
# KILL_AFTER it kills itself (SIGKILL: nothing is cleaned up) once that many chunks of 4 images are done.
DECODER = """
import json, os, signal, sys
import contextlib
import vqtool.data.store as store
from vqtool.data import load_dataset
from vqtool.data.pipeline import Preprocess, decode_split

store.CHUNK_BYTES = 4 * 3 * 32 * 32
kill_after = int(os.environ.get("KILL_AFTER", "0"))

class Reporter:
    debug = False
    logs = []
    def log(self, message): self.logs.append(message)
    def warn(self, message): self.logs.append(message)
    def table(self, *args, **kwargs): pass
    @contextlib.contextmanager
    def progress(self, description, total):
        done = []
        def advance(n=1):
            done.append(n)
            if kill_after and len(done) == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        yield advance

reporter = Reporter()
split = load_dataset(sys.argv[1]).train
pixels = decode_split(split, Preprocess(32, 3, (0.5,) * 3, (0.5,) * 3), reporter=reporter, name="train").pixels
print(json.dumps({"logs": reporter.logs, "sum": int(pixels[:].long().sum())}))
"""


def decoder(tree: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DECODER, str(tree)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **env})


def decoded_counts(logs: list[str]) -> list[int]:
    return [int(line.split()[2]) for line in logs if line.startswith("store: decoded")]


def preprocess(size=32):
    from vqtool.data.pipeline import Preprocess

    return Preprocess(size, 3, (0.5,) * 3, (0.5,) * 3)


def train_split(tree: Path):
    from vqtool.data import DataOptions, load_dataset

    return load_dataset(str(tree), DataOptions()).train


def test_a_second_run_decodes_nothing_and_trains_the_same(run_cli, class_tree):
    args = ("train", class_tree, "--model", "cnn-bn", "--imgsz", "32", "--epochs", "1", "--json")
    first, second = run_cli(*args), run_cli(*args)
    assert "store: decoded 24 images of the train split" in first.stderr
    assert "store: decoded" not in second.stderr and "train split read from" in second.stderr
    in_memory = run_cli(*args, "--no-cache-store")
    assert "store:" not in in_memory.stderr
    losses = {summary_of(result)["train_loss"] for result in (first, second, in_memory)}
    assert len(losses) == 1  # the same pixels, batches and weights, from the store or from memory
    listed = json.loads(run_cli("cache", "list", "--json").stdout)
    assert {(e["kind"], e["what"], e["rows"]) for e in listed["entries"]} == {
        ("pixels", "the train split", 24), ("pixels", "the val split", 24)}
    assert json.loads(run_cli("cache", "clear", "--older-than", "1", "--json").stdout)["removed"] == 0
    assert json.loads(run_cli("cache", "clear", "--json").stdout)["removed"] == 2
    assert json.loads(run_cli("cache", "list", "--json").stdout)["entries"] == []


def test_a_changed_file_is_decoded_again(class_tree, reporter):
    from vqtool.data.pipeline import decode_split

    stored = decode_split(train_split(class_tree), preprocess(), reporter=reporter, name="train")
    changed = class_tree / "train" / "vertical" / "vertical_3.png"
    stripes("horizontal", 32, seed=99).save(changed)
    again = decode_split(train_split(class_tree), preprocess(), reporter=reporter, name="train")
    assert decoded_counts(reporter.logs) == [24, 24]
    position = train_split(class_tree).files.index(str(changed))
    assert not torch.equal(stored.pixels[position], again.pixels[position])
    others = [i for i in range(24) if i != position]
    assert torch.equal(stored.pixels[others], again.pixels[others])


def test_a_killed_build_continues_from_its_last_chunk(class_tree, reporter):
    from vqtool.data.pipeline import decode_split

    killed = decoder(class_tree, KILL_AFTER="2")
    killed.communicate(timeout=120)
    assert killed.returncode == -9  # SIGKILL after two chunks of 4 images
    resumed = decoder(class_tree)
    logs = json.loads(resumed.communicate(timeout=120)[0])["logs"]
    assert "store: continuing an interrupted decoding of the train split at image 9 of 24" in logs
    assert decoded_counts(logs) == [16]
    in_memory = decode_split(train_split(class_tree), preprocess(), store=False)
    mapped = decode_split(train_split(class_tree), preprocess(), reporter=reporter)
    assert decoded_counts(reporter.logs) == []
    assert torch.equal(mapped.pixels[:], in_memory.pixels)


def test_two_processes_at_once_decode_once(class_tree):
    runs = [decoder(class_tree), decoder(class_tree)]
    results = [json.loads(run.communicate(timeout=120)[0]) for run in runs]
    assert sorted(sum(decoded_counts(r["logs"]), 0) for r in results) == [0, 24]
    assert results[0]["sum"] == results[1]["sum"]


@pytest.mark.slow
def test_the_ranks_of_torchrun_share_one_decoding(tmp_path):
    from test_distributed import torchrun

    make_class_tree(tmp_path / "stripes")
    summary_of(torchrun("train", "stripes", "--model", "cnn-bn", "--imgsz", "32", "--epochs", "1", "--out", "run",
                        "--json", cwd=tmp_path))
    indexes = [json.loads(path.read_text()) for path in (tmp_path / "store" / "pixels").glob("*/index.json")]
    assert sorted(index["what"] for index in indexes) == ["the train split", "the val split"]
    assert all(index["decoded"]["images"] == 24 for index in indexes)  # each by one rank, the other waited


def test_full_disk_is_one_line(class_tree, monkeypatch):
    import shutil

    from vqtool.data.pipeline import decode_split
    from vqtool.errors import VQError

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    with pytest.raises(VQError, match=r"the store needs 0\.00 GB in .* but 0\.00 GB are free; .*--no-cache-store"):
        decode_split(train_split(class_tree), preprocess())


def test_frozen_finetune_twice_reuses_the_features(run_cli, class_tree, tmp_path):
    from test_finetune import save_torchvision_weights

    weights = save_torchvision_weights(tmp_path / "resnet18.pth")
    args = ("finetune", class_tree, "--model", "resnet18", "--weights", weights, "--imgsz", "32", "--epochs", "2",
            "--augment", "basic", "--json")
    first, second = run_cli(*args), run_cli(*args)
    assert "backbone runs in" in first.stderr and "backbone runs in" not in second.stderr
    assert "train and val features read from the store" in second.stderr
    metrics = [{k: v for k, v in summary_of(r).items() if k not in ("run_dir", "checkpoint", "seconds", "backbone_seconds", "head_seconds", "head_images_per_second",
                                                                    "images_per_second")} for r in (first, second)]
    assert metrics[0] == metrics[1]
    kinds = [e["kind"] for e in json.loads(run_cli("cache", "list", "--json").stdout)["entries"]]
    assert kinds.count("features") == 2


# --- CSV and text lists ---------------------------------------------------------------------------------


def test_a_csv_of_paths_labels_and_splits(run_cli, tmp_path):
    make_class_tree(tmp_path / "photos", per_class=6, splits=())
    rows = ["file,label,split"]
    for i, path in enumerate(sorted((tmp_path / "photos").rglob("*.png"))):
        rows.append(f"photos/{path.parent.name}/{path.name},{path.parent.name},{'val' if i % 3 == 0 else 'train'}")
    rows += ["photos/horizontal/gone.png,horizontal,train", "photos/vertical/vertical_0.png,diagonal,val"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    result = run_cli("train", tmp_path / "labels.csv", "--model", "cnn-bn", "--imgsz", "32", "--epochs", "1", "--json")
    summary = summary_of(result)
    assert "skipped 1 unreadable image file(s)" in result.stderr and "gone.png (No such file" in result.stderr
    assert "1 row(s) without a training label" in result.stderr and "'diagonal' is not a training class" in result.stderr
    meta = json.loads((Path(summary["run_dir"]) / "model.json").read_text())
    assert meta["classes"] == ["horizontal", "vertical"] and meta["dataset"]["source"] == "csv"
    strict = run_cli("train", tmp_path / "labels.csv", "--model", "cnn-bn", "--imgsz", "32", "--strict")
    assert strict.exit_code == 1 and "Error: 1 unreadable image file(s): " in strict.stderr  # the train split's


def test_kaggle_ids_and_an_images_folder(tmp_path):
    from vqtool.data import DataOptions, load_dataset

    images = tmp_path / "images"
    images.mkdir()
    lines = ["id,label"]  # the header could come in any order of known names
    for i in range(8):
        kind = "horizontal" if i % 2 else "vertical"
        stripes(kind, 16, seed=i).save(images / f"img{i:03d}.jpg")
        lines.append(f"img{i:03d},{kind}")
    (tmp_path / "train.csv").write_text("\n".join(lines))
    dataset = load_dataset(str(tmp_path / "train.csv"), DataOptions(val_split=0.25))
    assert dataset.classes == ["horizontal", "vertical"]
    files = dataset.train.files + dataset.val.files
    assert sorted(files) == sorted(str(images / f"img{i:03d}.jpg") for i in range(8))
    assert len(dataset.val) == 2


def test_a_text_list_takes_labels_from_folders(tmp_path):
    from vqtool.data import DataOptions, load_dataset

    make_class_tree(tmp_path / "photos", per_class=3, size=16, splits=())
    paths = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "photos").rglob("*.png"))
    (tmp_path / "list.txt").write_text("\n".join(paths) + "\n")
    dataset = load_dataset(str(tmp_path / "list.txt"), DataOptions(val_split=0))
    assert dataset.classes == ["horizontal", "vertical"] and dataset.train.labels.tolist() == [0, 0, 0, 1, 1, 1]


# --- entries are checked before they are used; only entries are listed and cleared (issue 29) -----------------


def store_entry(class_tree, reporter):
    """(the decoded train split, its store entry's folder)."""
    from vqtool.data.pipeline import decode_split

    decoded = decode_split(train_split(class_tree), preprocess(), reporter=reporter, name="train")
    return decoded, Path(decoded.pixels.source).parent


def random_bytes(entry: Path) -> None:
    data = entry / "data.bin"
    data.write_bytes(os.urandom(data.stat().st_size))


def rows_listed_twice(entry: Path) -> None:
    index = json.loads((entry / "index.json").read_text())
    index["kept"] = index["kept"][:12] * 2  # the first 12 images twice, the others never
    (entry / "index.json").write_text(json.dumps(index))


def junk_index(entry: Path) -> None:
    (entry / "index.json").write_text('{"shape": "x", "kept": 5')


def index_of_another_shape(entry: Path) -> None:
    index = json.loads((entry / "index.json").read_text())
    index["shape"][0] *= 2  # data.bin would be read past its end
    (entry / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("damage, reason", [
    (random_bytes, "data.bin does not match its checksum"),
    (rows_listed_twice, "an index that does not match its checksum"),
    (junk_index, "unreadable index"),
    (index_of_another_shape, "an index that does not match its checksum"),
], ids=["data.bin of random bytes", "index.json listing rows twice", "index.json that is not JSON",
        "index.json of another shape"])
def test_a_damaged_entry_is_decoded_again_never_used(class_tree, reporter, damage, reason):
    from vqtool.data.pipeline import decode_split

    first, entry = store_entry(class_tree, reporter)
    expected = first.pixels[torch.arange(len(first))].clone()
    damage(entry)
    again = decode_split(train_split(class_tree), preprocess(), reporter=reporter, name="train")
    assert any("is damaged" in warning and reason in warning for warning in reporter.warnings), reporter.warnings
    assert decoded_counts(reporter.logs) == [24, 24]
    assert torch.equal(again.pixels[torch.arange(len(again))], expected)
    assert decode_split(train_split(class_tree), preprocess(), reporter=reporter, name="train") is not None
    assert decoded_counts(reporter.logs) == [24, 24]  # repaired: the third read decodes nothing


def test_cache_list_and_clear_take_only_entries(run_cli, class_tree, reporter, tmp_path):
    from vqtool.data.store import cache_root

    _, entry = store_entry(class_tree, reporter)
    root = cache_root()
    photos = root / "pixels" / "my_photos"  # a user's folder inside the cache folder: not an entry
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"meow")
    (root / "pixels" / "notes.txt").write_text("mine")
    elsewhere = tmp_path / "elsewhere" / ("0" * 32)  # a kind folder that is a link: never followed
    elsewhere.mkdir(parents=True)
    (elsewhere / "index.json").write_text("{}")
    (root / "features").symlink_to(elsewhere.parent)
    junk = root / "pixels" / ("f" * 32)  # an entry folder holding junk: listed as damaged, cleared
    junk.mkdir()
    (junk / "index.json").write_bytes(b"\xff[[[")
    listed = json.loads(run_cli("cache", "list", "--json").stdout)
    assert {(row["key"], "damaged" in row) for row in listed["entries"]} == {(entry.name, False), ("f" * 32, True)}
    assert "cannot" not in run_cli("cache", "list").stderr
    assert json.loads(run_cli("cache", "clear", "--json").stdout)["removed"] == 2
    assert (photos / "cat.jpg").read_bytes() == b"meow" and (root / "pixels" / "notes.txt").exists()
    assert (elsewhere / "index.json").exists() and not entry.exists() and not junk.exists()


def test_an_unchanged_entry_is_not_hashed_on_every_use_a_replaced_data_file_is(class_tree, reporter, monkeypatch):
    """Hashing data.bin costs seconds per GB: it is skipped while the file's size, inode and change time are as
    the entry recorded them (and that time is older than a clock tick)."""
    import vqtool.data.store as store

    _, folder = store_entry(class_tree, reporter)
    entry, digest, hashed = store.Entry("pixels", folder.name), store.file_digest, []
    monkeypatch.setattr(store, "file_digest", lambda path: hashed.append(path) or digest(path))
    assert entry.index() is not None and len(hashed) == 1  # written this very tick: hashed
    monkeypatch.setattr(store, "CLOCK_TICK_NS", 0)  # as if written long ago
    assert entry.index() is not None and len(hashed) == 1
    replacement = folder / "other.bin"
    replacement.write_bytes(os.urandom((folder / "data.bin").stat().st_size))
    os.replace(replacement, folder / "data.bin")  # same size, another inode
    assert entry.index() is None and len(hashed) == 2 and "does not match its checksum" in entry.damage
