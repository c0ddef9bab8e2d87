"""Metric math against hand-computed cases and an independent per-pixel implementation."""

import math

import numpy as np
import pytest
import torch

from segbench.metrics.confusion import ConfusionMatrix, compute_metrics


def scores(pred, target, k, ignore=255):
    cm = ConfusionMatrix(k, ignore)
    cm.update(torch.tensor(pred), torch.tensor(target))
    return cm, cm.compute()


def test_all_correct():
    target = [[0, 1], [2, 2]]
    _, m = scores(target, target, 3)
    assert m.mIoU == 1.0 and m.mDice == 1.0 and m.aAcc == 1.0 and m.mAcc == 1.0 and m.fwIoU == 1.0


def test_all_wrong():
    target = [[0, 0], [1, 1]]
    pred = [[1, 1], [0, 0]]
    _, m = scores(pred, target, 2)
    assert m.mIoU == 0.0 and m.mDice == 0.0 and m.aAcc == 0.0 and m.mAcc == 0.0


def test_ignored_pixels_are_dropped_whatever_is_predicted():
    target = [[0, 255], [1, 255]]
    pred = [[0, 1], [1, 0]]
    cm, m = scores(pred, target, 2)
    assert cm.matrix.tolist() == [[1, 0], [0, 1]]
    assert m.mIoU == 1.0 and m.aAcc == 1.0


def test_absent_class_is_nan_and_left_out_of_the_mean():
    # class 2 is neither in the ground truth nor predicted
    target = [[0, 0, 1, 1]]
    pred = [[0, 1, 1, 1]]
    _, m = scores(pred, target, 3)
    # class 0: TP 1, FP 0, FN 1 -> IoU 1/2; class 1: TP 2, FP 1, FN 0 -> IoU 2/3
    assert math.isnan(m.iou[2]) and math.isnan(m.dice[2]) and math.isnan(m.acc[2])
    assert m.mIoU == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m.mDice == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert m.aAcc == pytest.approx(3 / 4)
    assert m.mAcc == pytest.approx((1 / 2 + 1) / 2)
    assert m.fwIoU == pytest.approx(0.5 * 1 / 2 + 0.5 * 2 / 3)


def test_class_never_predicted_counts_as_zero_iou():
    # class 2 is in the ground truth but never predicted: IoU 0, kept in the mean
    target = [[0, 1, 2, 2]]
    pred = [[0, 1, 1, 0]]
    _, m = scores(pred, target, 3)
    # class 0: TP1 FP1 FN0 -> 1/2; class 1: TP1 FP1 FN0 -> 1/2; class 2: TP0 FN2 -> 0
    assert m.iou.tolist() == [0.5, 0.5, 0.0]
    assert m.mIoU == pytest.approx(1 / 3)
    assert m.acc.tolist() == [1.0, 1.0, 0.0]
    assert m.mAcc == pytest.approx(2 / 3)


def test_predicted_but_absent_from_ground_truth_has_iou_zero_and_acc_nan():
    target = [[0, 0]]
    pred = [[0, 1]]
    _, m = scores(pred, target, 2)
    assert m.iou.tolist() == [0.5, 0.0]
    assert math.isnan(m.acc[1])
    assert m.mIoU == pytest.approx(0.25)


def test_empty_matrix_gives_nan_not_an_error():
    m = compute_metrics(np.zeros((3, 3), np.int64))
    assert math.isnan(m.mIoU) and math.isnan(m.aAcc)


def test_accumulation_is_over_the_dataset_not_per_image():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[0, 0, 0, 1]]), torch.tensor([[0, 0, 0, 0]]))  # image 1
    cm.update(torch.tensor([[1]]), torch.tensor([[1]]))  # image 2
    m = cm.compute()
    # dataset level: class 0 TP3 FN1 -> 3/4; class 1 TP1 FP1 -> 1/2; per-image averaging would differ
    assert m.mIoU == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_matches_a_per_pixel_reference_on_random_batches():
    rng = np.random.default_rng(0)
    k = 5
    cm = ConfusionMatrix(k)
    reference = np.zeros((k, k), np.int64)
    for _ in range(4):
        target = rng.integers(0, k, (2, 17, 23))
        target[rng.random(target.shape) < 0.2] = 255
        pred = rng.integers(0, k, (2, 17, 23))
        cm.update(torch.from_numpy(pred), torch.from_numpy(target))
        for t, p in zip(target.ravel(), pred.ravel()):
            if t != 255:
                reference[t, p] += 1
    assert cm.matrix.dtype == torch.int64
    assert (cm.matrix.numpy() == reference).all()
    m = cm.compute()
    tp = np.diag(reference)
    iou = tp / (reference.sum(0) + reference.sum(1) - tp)
    assert m.mIoU == pytest.approx(iou.mean())


def test_per_image_intersections_and_unions_add_up_to_the_dataset_matrix():
    rng = np.random.default_rng(1)
    k = 4
    cm = ConfusionMatrix(k, per_image=True)
    targets, preds = [], []
    for _ in range(3):
        target = rng.integers(0, k, (2, 9, 11))
        target[rng.random(target.shape) < 0.3] = 255
        pred = rng.integers(0, k, (2, 9, 11))
        targets.append(target)
        preds.append(pred)
        cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    inter, union = cm.per_image_stats()
    assert inter.shape == union.shape == (6, k)
    flat_t = np.concatenate(targets)
    flat_p = np.concatenate(preds)
    for i in range(6):
        keep = flat_t[i] != 255
        for c in range(k):
            t, p = flat_t[i][keep] == c, flat_p[i][keep] == c
            assert inter[i, c] == (t & p).sum()
            assert union[i, c] == (t | p).sum()
    matrix = cm.matrix.numpy()
    tp = np.diag(matrix)
    assert (inter.sum(0) == tp).all()
    assert (union.sum(0) == matrix.sum(0) + matrix.sum(1) - tp).all()
