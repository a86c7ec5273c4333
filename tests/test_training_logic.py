"""Unit tests of the training loop's judgements: the overfitting diagnosis and the LR range test's suggestion."""

import math

import pytest

from vqtool.classification.training.lr_find import RangeTest
from vqtool.classification.training.hints import diagnose


def history(*accuracies: tuple[float, float]) -> list[dict]:
    """Epoch records from (train accuracy, val accuracy) pairs."""
    return [{"epoch": i + 1, "train_top1": train, "val_top1": val, "train_loss": 1.0, "val_loss": 1.0}
            for i, (train, val) in enumerate(accuracies)]


@pytest.mark.parametrize("epochs, hint", [
    # train well above a val accuracy that stopped improving: overfitting
    (history((0.80, 0.80), (0.95, 0.80), (0.99, 0.80)), "overfitting: train accuracy 0.990 vs val 0.800"),
    (history((0.90, 0.85), (0.97, 0.84), (0.99, 0.83)), "overfitting: train accuracy 0.990 vs val 0.830"),
    # val still rising at the end: more epochs
    (history((0.50, 0.50), (0.60, 0.58), (0.70, 0.66)), "val accuracy was still rising"),
    (history((0.50, 0.50), (0.60, 0.58)), "val accuracy was still rising"),
    # a small gap on a flat val curve, or a falling one without a gap: nothing to say
    (history((0.90, 0.89), (0.91, 0.89), (0.91, 0.89)), None),
    (history((0.80, 0.80), (0.80, 0.79), (0.80, 0.78)), None),
    # a run without validation data cannot be judged
    ([{"epoch": 1, "train_top1": 1.0, "val_top1": None, "train_loss": 0.1, "val_loss": None}], None),
])
def test_diagnose(epochs, hint):
    found = diagnose(epochs)
    if hint is None:
        assert found is None
    else:
        assert found is not None and found.startswith(hint)


def test_overfitting_hint_says_what_to_try():
    found = diagnose(history((0.80, 0.80), (0.95, 0.80), (0.99, 0.80)))
    assert "--augment" in found and "--early-stop" in found


def range_test(losses: list[float]) -> RangeTest:
    return RangeTest(lrs=[10 ** (-7 + i * 0.5) for i in range(len(losses))], losses=losses)


def test_the_suggestion_is_where_the_loss_falls_fastest():
    # flat, then a gentle fall, the steepest fall between 1e-4 and 1e-3 (index 6 -> 8), a minimum, then divergence
    test = range_test([2.3, 2.3, 2.29, 2.28, 2.2, 2.1, 1.9, 1.2, 0.6, 0.5, 0.45, 0.9, 3.0])
    assert test.suggestion == pytest.approx(10 ** -3.5)  # index 7, the middle of the steepest stretch
    assert test.min_loss_lr == pytest.approx(10 ** -2)  # index 10


def test_the_steepest_fall_is_measured_against_log_lr_not_steps():
    # the biggest drop between neighbouring steps (1.8 -> 1.5) spans a whole decade; per decade of LR the fall
    # is steepest around 1.1e-4, where 1.5 -> 1.0 happens within one decade (central differences)
    lrs = [1e-6, 2e-6, 1e-5, 1e-4, 1.1e-4, 1e-3, 1e-2]
    test = RangeTest(lrs=lrs, losses=[2.0, 1.9, 1.8, 1.5, 1.4, 1.0, 2.0])
    slopes = {i: (test.losses[i + 1] - test.losses[i - 1]) / (math.log10(lrs[i + 1]) - math.log10(lrs[i - 1]))
              for i in range(1, 5)}
    assert min(slopes, key=slopes.get) == 4
    assert test.suggestion == 1.1e-4


def test_a_minimum_at_the_start_suggests_a_tenth_of_it():
    test = range_test([1.0, 1.5, 3.0, 9.0])
    assert test.suggestion == pytest.approx(1e-8)  # a tenth of the first LR: every larger one made things worse
