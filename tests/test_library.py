import subprocess
import sys

import pytest
import torch

from vqtool.data import stratified_split
from vqtool.data.pipeline import Augmenter
from vqtool.metrics import classification_report, confused_pairs, confusion_matrix


def test_help_of_every_command_imports_no_heavy_library():
    code = ("import sys, click; from click.testing import CliRunner; from vqtool.cli import cli\n"
            "def paths(group, path):\n"
            "    for name in group.list_commands(click.Context(group)):\n"
            "        command = group.get_command(click.Context(group), name)\n"
            "        yield [*path, name]\n"
            "        if isinstance(command, click.Group): yield from paths(command, [*path, name])\n"
            "for path in [[], *paths(cli, [])]:\n"
            "    result = CliRunner().invoke(cli, [*path, '--help'])\n"
            "    assert result.exit_code == 0 and 'Examples' in result.output, path\n"
            "print(sorted({'torch', 'ultralytics', 'onnx', 'timm'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_embedded_digits_are_scikit_learns_and_load_without_it():
    from sklearn.datasets import load_digits

    from vqtool.data import DataOptions, load_dataset

    code = ("import sys; from vqtool.data import load_dataset; load_dataset('digits')\n"
            "print('sklearn' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr  # importing sklearn.datasets costs seconds
    dataset, bunch = load_dataset("digits", DataOptions(val_split=0.0)), load_digits()
    ours = torch.cat([dataset.train.pixels, dataset.test.pixels]).flatten(1).sum(1).sort().values
    theirs = torch.from_numpy((bunch.images * (255 / 16)).round()).flatten(1).sum(1).sort().values
    assert torch.equal(ours.double(), theirs) and len(ours) == 1797


def test_stratified_split_keeps_class_shares_and_is_seeded():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    kept, held = stratified_split(labels, 0.2, seed=3)
    assert torch.bincount(labels[held]).tolist() == [10, 6, 4]
    assert len(set(kept.tolist()) | set(held.tolist())) == 100
    assert torch.equal(held, stratified_split(labels, 0.2, seed=3)[1])
    assert not torch.equal(held, stratified_split(labels, 0.2, seed=4)[1])


def test_augmenter_is_seeded_and_never_flips_when_told_not_to():
    image = torch.zeros(1, 1, 16, 16)
    image[..., :, :4] = 1.0  # a bar on the left
    batch = image.repeat(64, 1, 1, 1)
    no_flip = Augmenter("basic", flips=False, generator=torch.Generator().manual_seed(0))(batch)
    assert (no_flip[..., :8].sum((1, 2, 3)) > no_flip[..., 8:].sum((1, 2, 3))).all()
    flipped = Augmenter("basic", flips=True, generator=torch.Generator().manual_seed(0))(batch)
    assert (flipped[..., :8].sum((1, 2, 3)) < flipped[..., 8:].sum((1, 2, 3))).any()
    again = Augmenter("basic", flips=True, generator=torch.Generator().manual_seed(0))(batch)
    assert torch.equal(flipped, again)


def test_classification_report_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2])
    logits = torch.eye(3)[torch.tensor([0, 1, 1, 1, 0])]
    report = classification_report(logits, labels, ["a", "b", "c"])
    assert report["top1"] == pytest.approx(0.6)
    assert report["top5"] is None
    assert report["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert report["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    matrix = confusion_matrix(logits.argmax(1), labels, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert confused_pairs(matrix, ["a", "b", "c"], 5) == [
        {"true": "a", "predicted": "b", "count": 1}, {"true": "c", "predicted": "a", "count": 1}]


def test_models_and_datasets_listings(run_cli):
    import json

    models = json.loads(run_cli("models", "--json").stdout)
    by_name = {m["name"]: m for m in models}
    assert by_name["smallcnn"]["input_size"] == 28 and by_name["resnet18"]["source"] == "torchvision"
    assert by_name["timm/resnet18"]["source"] == "timm"
    filtered = json.loads(run_cli("models", "cnn", "--json").stdout)
    assert {"smallcnn", "simplecnn", "cnn-bn"} <= {m["name"] for m in filtered}
    datasets = {d["name"] for d in json.loads(run_cli("datasets", "--json").stdout)}
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "folder"} <= datasets


def test_normalizer_matches_the_formula_and_leaves_its_input_alone():
    from vqtool.data.pipeline import Normalizer, Preprocess, stack_images

    preprocess = Preprocess(size=8, channels=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    images = [torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8) for _ in range(4)]
    batch = stack_images(images)
    assert torch.equal(batch, torch.stack(images))
    mean, std = torch.tensor(preprocess.mean).view(1, 3, 1, 1), torch.tensor(preprocess.std).view(1, 3, 1, 1)
    for given in (batch, batch.float()):
        before = given.clone()
        x = Normalizer(preprocess, torch.device("cpu"))(given)
        assert torch.allclose(x, (batch.float() / 255 - mean) / std, atol=1e-6) and torch.equal(given, before)
