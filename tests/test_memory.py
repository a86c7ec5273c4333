"""Memory depends on the batch size and the model, not on the number of images.

The passes that read a whole stored split run over a small and a four times
larger dataset in one process; for each, the peak RSS is reset before and read
after (Linux's clear_refs), so the decoding that builds the store is left out.
The larger pass may only add what it keeps (features, logits), not something
per batch.
"""

import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import make_class_tree

SMALL, LARGE = 300, 1200
IMGSZ = 96  # a normalised batch of 16 is 1.8 MB: anything kept per batch shows far above the noise
TOLERANCE_MB = 25

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


def _peak_mb_during(work) -> float:
    """How far RSS peaked above where it was while ``work()`` ran, in MB."""
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    before = _status("VmRSS")
    work()
    return (_status("VmHWM") - before) / 1024


def _status(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


@pytest.mark.slow  # over 30 s in the default suite (measured with --durations)
def test_feature_pass_and_eval_peak_memory_is_flat_in_the_number_of_images(tmp_path, reporter):
    import timm

    from vqtool.classification.training.features import cache_features, frozen_backbone
    from vqtool.classification.inference.logits import logits_of
    from vqtool.data import load_dataset
    from vqtool.data.pipeline import ImageInputs, Preprocess, decode_split

    preprocess = Preprocess(size=IMGSZ, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    splits = {n: decode_split(load_dataset(str(make_class_tree(tmp_path / f"stripes-{n}", per_class=n // 2, size=48,
                                                               splits=("train",)))).split("train"), preprocess)
              for n in (SMALL, LARGE)}
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=2).eval()
    inputs = ImageInputs(preprocess, torch.device("cpu"))
    with frozen_backbone(model, "fc", inputs.eval(splits[SMALL].pixels[:16]), reporter) as backbone:
        def passes(split):
            cache_features(backbone, split, inputs, 1, augment=False, reporter=reporter, description="features")
            logits_of(model, split, preprocess, torch.device("cpu"), batch_size=32)

        passes(splits[SMALL])  # warms up the runtimes' own pools
        peaks = {n: _peak_mb_during(lambda: passes(splits[n])) for n in (SMALL, LARGE)}
    kept_mb = (LARGE - SMALL) * (512 + 2) * 4 / 1e6  # the features and logits of the extra images
    assert peaks[LARGE] - peaks[SMALL] < kept_mb + TOLERANCE_MB, peaks
