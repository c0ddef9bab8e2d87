import numpy as np
import pytest

from segbench.metrics.confusion import compute_metrics
from segbench.metrics.statistics import bootstrap, bootstrap_difference, score


def per_image(images: int, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-image intersections and unions from random per-image confusion matrices, and their matrices."""
    rng = np.random.default_rng(seed)
    matrices = rng.integers(0, 50, size=(images, classes, classes)) * (rng.random((images, 1, 1)) < 0.9)
    matrices[:, np.arange(classes), np.arange(classes)] += rng.integers(0, 400, size=(images, classes))
    tp = matrices.diagonal(axis1=1, axis2=2)
    return tp, matrices.sum(1) + matrices.sum(2) - tp, matrices


def test_score_matches_the_confusion_matrix_metrics():
    matrices = per_image(30)[2]
    matrices[:, 3, :] = 0  # class 3 absent from ground truth and predictions: NaN, left out of the mean
    matrices[:, :, 3] = 0
    tp = matrices.diagonal(axis1=1, axis2=2)
    intersection, union = tp, matrices.sum(1) + matrices.sum(2) - tp
    expected = compute_metrics(matrices.sum(0))
    assert score(intersection.sum(0), union.sum(0)) == pytest.approx(expected.mIoU)
    assert score(intersection.sum(0), union.sum(0), "mDice") == pytest.approx(expected.mDice)


def test_hand_checked_bootstrap():
    # Image A holds class 0 only (I=1, U=1); image B has I=0, U=1 for class 0 and I=1, U=1 for class 1.
    # Resamples: AA -> class 1 absent, mIoU 1.0 (p 1/4); BB -> mean(0, 1) = 0.5 (p 1/4); AB -> mean(1/2, 1) = 0.75.
    interval = bootstrap([[1, 0], [0, 1]], [[1, 0], [1, 1]], resamples=4000, seed=1)
    assert interval.estimate == 0.75
    assert (interval.low, interval.high) == (0.5, 1.0)


def test_interval_contains_the_estimate_and_shrinks_with_more_images():
    small = bootstrap(*per_image(20)[:2])
    large = bootstrap(*per_image(2000)[:2])
    for interval in (small, large):
        assert interval.low < interval.estimate < interval.high
    assert (large.high - large.low) < 0.5 * (small.high - small.low)


def test_bootstrap_is_seeded():
    data = per_image(50)[:2]
    assert bootstrap(*data, seed=3) == bootstrap(*data, seed=3)
    assert bootstrap(*data, seed=3) != bootstrap(*data, seed=4)


def test_paired_difference_sees_a_small_consistent_change_that_unpaired_cannot():
    intersection, union, _ = per_image(100, seed=2)
    better = (intersection + np.minimum(2, union - intersection), union)  # two more correct pixels per class and image
    paired = bootstrap_difference(better, (intersection, union), paired=True)
    unpaired = bootstrap_difference(better, (intersection, union), paired=False)
    by_hand = np.mean(better[0].sum(0) / better[1].sum(0)) - np.mean(intersection.sum(0) / union.sum(0))
    assert paired.estimate == unpaired.estimate == pytest.approx(by_hand) and by_hand > 0
    assert paired.paired and paired.low > 0  # the interval excludes zero
    assert unpaired.low <= 0 <= unpaired.high
    assert (paired.high - paired.low) < 0.2 * (unpaired.high - unpaired.low)


def test_identical_runs_differ_by_exactly_zero():
    data = per_image(40)[:2]
    diff = bootstrap_difference(data, data, paired=True)
    assert (diff.estimate, diff.low, diff.high) == (0, 0, 0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="same images"):
        bootstrap_difference(per_image(5)[:2], per_image(6)[:2], paired=True)
    with pytest.raises(ValueError, match="images x classes"):
        bootstrap([1, 2], [1, 2])
