"""Losses honour the ignore index and add up as configured."""

import pytest
import torch
import torch.nn.functional as F

from segbench.train.losses import build_loss


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    target[:, :3] = 255
    return logits, target


def test_cross_entropy_matches_a_hand_computation_over_labelled_pixels():
    logits, target = batch()
    loss = build_loss({"ce": 1.0})(logits, target)
    log_probs = torch.log_softmax(logits, 1)
    keep = target != 255
    picked = log_probs.permute(0, 2, 3, 1)[keep].gather(1, target[keep][:, None])
    assert loss.item() == pytest.approx(-picked.mean().item(), rel=1e-6)


def test_class_weights_reach_cross_entropy():
    logits, target = batch()
    weights = [1.0, 2.0, 0.5, 3.0]
    loss = build_loss({"ce": 1.0}, class_weights=weights)(logits, target)
    expected = F.cross_entropy(logits, target, weight=torch.tensor(weights), ignore_index=255)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["ce", "focal", "dice"])
def test_ignored_pixels_get_no_gradient(name):
    logits, target = batch()
    build_loss({name: 1.0})(logits, target).backward()
    assert logits.grad[:, :, :3].abs().sum() == 0
    assert logits.grad[:, :, 3:].abs().sum() > 0


def test_weighted_sum():
    logits, target = batch()
    total = build_loss({"ce": 1.0, "dice": 0.5})(logits, target)
    parts = build_loss({"ce": 1.0})(logits, target) + 0.5 * build_loss({"dice": 1.0})(logits, target)
    assert total.item() == pytest.approx(parts.item(), rel=1e-6)
