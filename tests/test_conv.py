import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

VERTICAL_EDGE = [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]


def square() -> torch.Tensor:
    x = torch.zeros(5, 5)
    x[1:4, 1:4] = 1
    return x


def conv(image: torch.Tensor, kernel, stride=1, padding=0) -> torch.Tensor:
    weight = torch.tensor(kernel, dtype=torch.float32)[None, None]
    return F.conv2d(image[None, None], weight, stride=stride, padding=padding)[0, 0]


def grid_side(cells: int, cell: int) -> int:
    """The side of a square-ish grid PNG: cells enlarged to at least 48 px, 2 px gaps."""
    columns = math.ceil(math.sqrt(cells))
    scaled = cell * math.ceil(48 / cell)
    return columns * scaled + (columns - 1) * 2


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def usage_error(result, *words):
    assert result.exit_code == 2, result.output
    assert any(line.startswith("Error: ") for line in result.stderr.splitlines()), result.stderr
    for word in words:
        assert word in result.stderr


# --- apply ----------------------------------------------------------------------------------------


def test_demo_square_prints_the_map_conv2d_computes(run_cli, drawn_figures):
    expected = conv(square(), VERTICAL_EDGE)
    result = run_cli("conv", "apply", "--demo", "square", "--out", "demo")
    assert result.exit_code == 0, result.output
    rows = [" ".join(f"{int(v):>2}" for v in row) for row in expected.tolist()]
    lines = result.stdout.splitlines()
    start = lines.index("map: input ⋆ vertical-edge, 3×3:")  # the map is labelled as a map, the kernel as a kernel
    assert lines[start + 1:start + 4] == rows
    assert lines[lines.index("kernel vertical-edge 3×3:") + 1] == "-1  0  1"
    assert lines[-2:] == ["demo/vertical-edge.png", "demo/figure.png"]
    # the map's own PNG: a title, its values written in, a colour bar with white at zero
    single, figure = drawn_figures
    (panel, _bar) = single["axes"]
    assert panel["title"].startswith("demo square ⋆ vertical-edge\nmap 3×3, values -3 to 3") and panel["colorbar"]
    assert (panel["images"][0] == expected.numpy()).all() and panel["clim"][0] == (-3, 3)
    assert sorted(panel["texts"]) == sorted(str(int(v)) for v in expected.flatten())
    titles = [axis["title"] for axis in figure["axes"] if axis["images"]]
    assert titles == ["input 5×5\ndemo square", "kernel vertical-edge 3×3", "map: input ⋆ vertical-edge, 3×3"]
    assert all(axis["colorbar"] for axis in figure["axes"] if axis["images"])


def test_apply_figures_show_a_blur_kernel_and_a_laplacian_map(run_cli, drawn_figures):
    """The blur kernel (all 0.111) is not drawn black, the Laplacian's sparse edges are not lost in grey."""
    result = run_cli("conv", "apply", "--kernel", "blur", "--kernel", "laplacian", "--out", "p", "-q")
    assert result.exit_code == 0, result.output
    figure = drawn_figures[-1]
    blur_kernel, blur_map, laplacian_kernel, laplacian_map = [axis for axis in figure["axes"]
                                                              if axis["images"] and axis["title"][0] in "km"][:4]
    low, high = blur_kernel["clim"][0]
    assert low < 0 < high and high == pytest.approx(1 / 9)  # white is zero: the equal weights show as one colour
    assert blur_kernel["texts"] == ["0.111"] * 9
    values = laplacian_map["images"][0]
    low, high = laplacian_map["clim"][0]
    assert low == -high and high < np.abs(values).max()  # the scale ends at the 99.5th percentile of |values|
    assert (np.abs(values) > high / 4).mean() > 0.05 and "colours end at" in laplacian_map["title"]


def test_apply_json_with_stride_padding_and_a_literal_kernel(run_cli):
    kernel = [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    result = run_cli("conv", "apply", "--demo", "square", "--kernel", json.dumps(kernel), "--kernel", "sobel-x",
                     "--stride", 2, "--padding", 1, "--out", "m", "--json")
    document = json.loads(result.stdout)
    expected = conv(square(), kernel, stride=2, padding=1)
    assert expected.shape == (3, 3)  # floor((5 + 2 - 2 - 1) / 2) + 1
    custom, sobel = document["maps"]
    assert custom["name"] == "custom-1" and custom["values"] == expected.tolist()
    assert sobel["values"] == conv(square(), [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], 2, 1).tolist()
    assert document["files"] == ["m/custom-1.png", "m/sobel-x.png", "m/figure.png"]
    assert png("m/custom-1.png").shape[1] > 300


def test_sobel_x_sees_vertical_stripes_and_sobel_y_does_not(run_cli, drawn_figures):
    from vqtool.conv.kernels import apply_kernels, parse_kernels, read_greyscale

    columns = (np.arange(32) // 4 % 2 * 255).astype(np.uint8)
    Image.fromarray(np.tile(columns, (32, 1))).convert("RGB").save("stripes.png")
    image, _ = read_greyscale("stripes.png")
    sobel_x, sobel_y = apply_kernels(image, parse_kernels(["sobel-x", "sobel-y"]))
    assert sobel_x.values.abs().max() == pytest.approx(4.0)  # 1+2+1 across a 0 -> 1 step
    assert sobel_y.values.abs().max() == 0
    result = run_cli("conv", "apply", "stripes.png", "--kernel", "sobel-x", "--kernel", "sobel-y", "--out", "s")
    assert result.exit_code == 0, result.output
    sobel_x_figure, sobel_y_figure = drawn_figures[:2]
    assert sobel_x_figure["axes"][0]["images"][0].shape == (30, 30)
    assert (sobel_x_figure["axes"][0]["images"][0] == sobel_x.values.numpy()).all()
    assert "values 0 to 0" in sobel_y_figure["axes"][0]["title"]  # a constant map says so


def test_apply_without_image_uses_the_sample_photo(run_cli, drawn_figures):
    result = run_cli("conv", "apply", "--kernel", "blur", "--out", "p", "--json")
    document = json.loads(result.stdout)
    height, width = document["input_shape"]
    assert "china.jpg" in document["input"]
    assert document["maps"][0]["values"] is None  # too big to print
    assert drawn_figures[0]["axes"][0]["images"][0].shape == (height - 2, width - 2)


@pytest.mark.parametrize("args, words", [
    (["--kernel", "sobel"], ["unknown kernel", "sobel-x"]),
    (["--kernel", "[[1,2],[3]]"], ["same length"]),
    (["--kernel", "[[1,2],"], ["cannot read kernel"]),
    (["--kernel", json.dumps([[1] * 7] * 7)], ["smaller than the kernel"]),
])
def test_apply_rejects_bad_kernels(run_cli, args, words):
    usage_error(run_cli("conv", "apply", "--demo", "square", *args), *words)


def test_help_lists_every_named_kernel(run_cli):
    from vqtool.conv.kernels import KERNELS

    help_text = run_cli("conv", "apply", "--help").stdout
    assert all(name in help_text for name in KERNELS)


# --- shape ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, kernel, padding, stride, expected", [
    (32, 3, 0, 1, 30), (32, 3, 1, 1, 32), (32, 5, 2, 1, 32), (32, 3, 1, 2, 16), (224, 7, 3, 2, 112),
])
def test_shape_of_one_layer(run_cli, size, kernel, padding, stride, expected):
    args = ["conv", "shape", "--input", size, "--kernel", kernel, "--padding", padding, "--stride", stride]
    assert json.loads(run_cli(*args, "--json").stdout)["output"] == expected
    assert run_cli(*args).stdout.strip().endswith(f"= {expected}")
    layer = torch.nn.Conv2d(1, 1, kernel, stride, padding)
    assert layer(torch.zeros(1, 1, size, size)).shape[-1] == expected


def test_shape_with_dilation_matches_torch(run_cli):
    document = json.loads(run_cli("conv", "shape", "--input", 32, "--kernel", 3, "--dilation", 2, "--json").stdout)
    assert document["output"] == torch.nn.Conv2d(1, 1, 3, dilation=2)(torch.zeros(1, 1, 32, 32)).shape[-1] == 28


def test_shape_of_a_chain(run_cli):
    result = run_cli("conv", "shape", "--input", 32, "--layers", "conv3x3s1p1,pool2,conv3x3s1p1,pool2,conv5x5s2p2d1,"
                     "pool3s2", "--json")
    rows = json.loads(result.stdout)["layers"]
    assert [row["output"] for row in rows] == [32, 16, 16, 8, 4, 1]
    assert [row["layer"] for row in rows][-2:] == ["conv5x5s2p2", "pool3s2"]
    assert "pool2s2" in run_cli("conv", "shape", "--input", 32, "--layers", "conv3x3,pool2").stdout


@pytest.mark.parametrize("args, words", [
    (["--input", 4, "--kernel", 7], ["conv7x7s1p0", "smaller than the kernel"]),
    (["--input", 32, "--layers", "pool2,pool2,pool2,pool2,pool2,pool2"], ["pool2s2", "1 px input"]),
    (["--input", 32, "--layers", "conv3x5"], ["cannot read layer"]),
    (["--input", 32, "--layers", "conv3x3", "--kernel", 3], ["--layers"]),
    (["--input", 32], ["--kernel"]),
])
def test_shape_errors(run_cli, args, words):
    usage_error(run_cli("conv", "shape", *args), *words)


# --- summary --------------------------------------------------------------------------------------


def test_resnet18_summary_totals(run_cli):
    document = json.loads(run_cli("conv", "summary", "resnet18", "--json").stdout)
    assert document["input"] == [3, 224, 224]
    assert document["total_params"] == document["trainable_params"] == 11_689_512
    assert sum(row["params"] for row in document["layers"]) == 11_689_512
    rows = {row["name"]: row for row in document["layers"]}
    assert rows["conv1"] == {"name": "conv1", "type": "Conv2d", "output_shape": [64, 112, 112], "params": 9408,
                             "macs": 64 * 112 * 112 * 3 * 7 * 7}
    assert rows["fc"]["macs"] == 512 * 1000 and rows["fc"]["output_shape"] == [1000]
    assert document["total_macs"] == sum(row["macs"] for row in document["layers"])
    assert document["first_conv"]["params"] == 9408
    assert document["dense_equivalent"]["params"] == 150_528_000


def test_smallcnn_summary_matches_a_hand_count(run_cli):
    conv1 = (1 * 3 * 3 + 1) * 16  # weights + biases
    conv2 = (16 * 3 * 3 + 1) * 32
    head = (32 * 7 * 7 + 1) * 10
    result = run_cli("conv", "summary", "smallcnn")
    assert result.exit_code == 0, result.output
    assert f"total parameters      {conv1 + conv2 + head:,}" in result.stdout
    document = json.loads(run_cli("conv", "summary", "smallcnn", "--json").stdout)
    assert document["input"] == [1, 28, 28]
    assert document["total_params"] == conv1 + conv2 + head == 20_490
    macs = {row["name"]: row["macs"] for row in document["layers"]}
    assert macs["features.0.0"] == 16 * 28 * 28 * 1 * 9
    assert macs["features.1.0"] == 32 * 14 * 14 * 16 * 9
    assert macs["head"] == 32 * 7 * 7 * 10
    assert document["dense_equivalent"] == {"inputs": 784, "units": 1000, "params": 784_000,
                                            "times_first_conv": 4900.0}
    classes = json.loads(run_cli("conv", "summary", "smallcnn", "--classes", 3, "--json").stdout)
    assert classes["total_params"] == conv1 + conv2 + (32 * 7 * 7 + 1) * 3


def test_timm_summaries(run_cli):
    resnet = json.loads(run_cli("conv", "summary", "timm/resnet18", "--input", "3x64x64", "--json").stdout)
    assert resnet["total_params"] == 11_689_512 and resnet["input"] == [3, 64, 64]
    lite = json.loads(run_cli("conv", "summary", "timm/tf_efficientnet_lite0", "--input", 64, "--json").stdout)
    assert lite["total_params"] == sum(row["params"] for row in lite["layers"]) == 4_652_008


def test_summary_errors(run_cli):
    usage_error(run_cli("conv", "summary", "resnet81"), "unknown model", "resnet18")
    usage_error(run_cli("conv", "summary", "smallcnn", "--input", "1x32x32"), "cannot take a 1x32x32 input")
    usage_error(run_cli("conv", "summary", "smallcnn", "--input", "3x"), "--input")


# --- checkpoints, features, filters ---------------------------------------------------------------


@pytest.fixture
def smallcnn_run(tmp_path):
    from vqtool.classification.checkpoints.format import save_checkpoint
    from vqtool.models.small import SmallCNN

    run = tmp_path / "run"
    run.mkdir()
    preprocess = {"size": 28, "channels": 1, "mean": [0.5], "std": [0.5], "resize": None,
                  "interpolation": "bilinear"}
    save_checkpoint(run, SmallCNN(3, 1), {"task": "classification", "architecture": "smallcnn", "num_classes": 3,
                                          "in_channels": 1, "classes": ["a", "b", "c"], "preprocess": preprocess})
    return run


def test_summary_of_a_checkpoint_uses_its_input(run_cli, smallcnn_run):
    document = json.loads(run_cli("conv", "summary", smallcnn_run / "model.safetensors", "--json").stdout)
    assert document["input"] == [1, 28, 28] and document["layers"][-1]["output_shape"] == [3]
    usage_error(run_cli("conv", "summary", smallcnn_run, "--classes", 5), "checkpoint")


def test_features_without_layer_lists_them(run_cli, smallcnn_run):
    result = run_cli("conv", "features", smallcnn_run)
    assert result.exit_code == 0, result.output
    for name in ("features.0.0", "features.0.2", "features.1"):
        assert name in result.stdout
    listed = json.loads(run_cli("conv", "features", "smallcnn", "--json").stdout)["layers"]
    shapes = {layer["name"]: layer["output_shape"] for layer in listed}
    assert shapes["features.0"] == [16, 14, 14] and shapes["features.1.0"] == [32, 14, 14]
    assert "head" not in shapes and "features.0.1" not in shapes  # logits and activations are not listed


def test_features_saves_one_grid_per_layer(run_cli, smallcnn_run):
    Image.fromarray(np.tile((np.arange(40) % 8 * 30).astype(np.uint8), (40, 1))).save("digit.png")
    result = run_cli("conv", "features", smallcnn_run, "digit.png", "--layer", "features.0", "--layer",
                     "features.1.0", "--out", "maps")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["maps/features.0-maps.png", "maps/features.1.0-maps.png"]
    # titled figures (model, layer, channel numbers, colour bar) around the grids of cells
    assert png("maps/features.0-maps.png").shape[1] > grid_side(16, 14)
    assert png("maps/features.1.0-maps.png").shape[1] > grid_side(32, 14)


def test_features_rejects_unknown_layers(run_cli):
    usage_error(run_cli("conv", "features", "smallcnn", "--layer", "features.O"), "unknown layer",
                "did you mean", "features.0")
    usage_error(run_cli("conv", "features", "smallcnn", "--layer", "head"), "not feature maps")


def test_filters_of_the_first_and_a_named_conv(run_cli, smallcnn_run):
    document = json.loads(run_cli("conv", "filters", smallcnn_run, "--out", "f", "--json").stdout)
    assert document["layer"] == "features.0.0" and document["shape"] == [16, 1, 3, 3]
    assert png("f/features.0.0-filters.png").shape[1] > grid_side(16, 3)
    result = run_cli("conv", "filters", "resnet18", "--layer", "layer1.0.conv1", "--out", "f")
    assert result.stdout.strip() == "f/layer1.0.conv1-filters.png"
    assert png("f/layer1.0.conv1-filters.png").shape[1] > grid_side(64, 3)
    rgb = run_cli("conv", "filters", "resnet18", "--out", "f")
    assert png(rgb.stdout.strip()).shape[1] > grid_side(64, 7)
    usage_error(run_cli("conv", "filters", "resnet18", "--layer", "layer1"), "not a Conv2d")


def test_weights_go_through_pretrained_classifier(run_cli, monkeypatch):
    from vqtool.data.pipeline import Preprocess
    from vqtool.models import weights
    from vqtool.models.small import SmallCNN

    calls = []

    def pretrained(name, spec, num_classes=None, allow_partial=False):
        calls.append((name, spec, num_classes, allow_partial))
        preprocess = Preprocess(size=28, channels=1, mean=(0.5,), std=(0.5,))
        return weights.Pretrained(SmallCNN(7, 1), preprocess, f"fake {spec}")

    monkeypatch.setattr(weights, "pretrained_classifier", pretrained)
    document = json.loads(run_cli("conv", "summary", "smallcnn", "--weights", "mine.pt", "--json").stdout)
    assert calls == [("smallcnn", "mine.pt", None, False)]
    assert document["source"] == "smallcnn, weights fake mine.pt" and document["layers"][-1]["output_shape"] == [7]


def test_filters_take_weights_none_or_random_for_random_init(run_cli, drawn_figures):
    for spec in ("none", "random", "None"):
        document = json.loads(run_cli("conv", "filters", "resnet18", "--weights", spec, "--out", f"r-{spec}", "--json").stdout)
        assert document["shape"] == [64, 3, 7, 7]
    assert drawn_figures[-1]["axes"][0]["title"].startswith("resnet18 (1000 classes, random weights), layer conv1")


def test_grids_say_their_scale_and_short_titles_name_the_weights_file(run_cli, tmp_path, drawn_figures):
    import torchvision

    weights = tmp_path / "some" / "deep" / "folder" / "of" / "weights" / "resnet18-mine.pth"
    weights.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    assert run_cli("conv", "filters", "resnet18", "--weights", weights, "--out", "f", "--scale", "channel",
                   "-q").exit_code == 0
    assert run_cli("conv", "features", "resnet18", "--weights", weights, "--layer", "layer1", "--out", "m",
                   "-q").exit_code == 0
    assert run_cli("conv", "features", "resnet18", "--layer", "layer1", "--out", "s", "--scale", "shared",
                   "-q").exit_code == 0
    filters, channel_maps, shared_maps = (figure["axes"][0] for figure in drawn_figures)
    title = filters["title"].replace("\n", " ")
    assert title.startswith("resnet18, weights …/weights/resnet18-mine.pth, layer conv1: 64 filters of 7×7")
    assert str(tmp_path) not in title and "each filter on its own scale" in title
    assert "each channel on its own scale" in channel_maps["title"].replace("\n", " ")
    assert "one scale for all channels" in shared_maps["title"].replace("\n", " ")
    assert channel_maps["clim"][0] == (0.0, 1.0)
    assert filters["texts"] == [str(channel) for channel in range(64)]  # every cell numbered, readably
    assert min(filters["fontsizes"]) >= 7 and min(channel_maps["fontsizes"]) >= 7
