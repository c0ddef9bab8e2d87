"""The dense CRF: it snaps coarse predictions to image edges and leaves good ones alone."""

import pytest
import torch
import torch.nn.functional as F

from segbench.config.schema import CRFConfig
from segbench.evaluation.crf import GaussianBlur, PermutohedralLattice, dense_crf
from segbench.metrics.confusion import ConfusionMatrix

H, W = 64, 80
COLOURS = torch.tensor([[200.0, 40, 40], [40, 160, 60], [40, 60, 200]])


def scene(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three sharp-edged regions (two halves and a disc) in distinct colours, with a little noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    label = (xx >= 26).long()
    label[(yy - 32) ** 2 + (xx - 56) ** 2 < 14**2] = 2
    image = (COLOURS[label].permute(2, 0, 1) + 8 * torch.randn(3, H, W, generator=g)).clamp(0, 255)
    return image.to(torch.uint8), label


def miou(probs: torch.Tensor, label: torch.Tensor) -> float:
    confusion = ConfusionMatrix(3)
    confusion.update(probs.argmax(0), label)
    return confusion.compute().mIoU


def coarse_prediction(label: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """A stride-8 prediction upsampled, shifted by (3, 4) pixels and noisy: boundaries off by several pixels."""
    g = torch.Generator().manual_seed(seed)
    onehot = F.one_hot(label, 3).permute(2, 0, 1).float()
    coarse = F.interpolate(F.avg_pool2d(onehot[None], 8), size=(H, W), mode="bilinear")[0]
    coarse = torch.roll(coarse, shifts=(3, 4), dims=(1, 2))
    return (3 * coarse + 0.5 * torch.randn(3, H, W, generator=g)).softmax(0)


@pytest.mark.parametrize("iters", [5, 10])  # an odd count too: wrong-signed messages oscillate
def test_crf_snaps_a_coarse_prediction_to_the_edges(iters):
    image, label = scene()
    probs = coarse_prediction(label)
    before = miou(probs, label)
    after = miou(dense_crf(image, probs, CRFConfig(iters=iters)), label)
    assert before < 0.8
    assert after > before + 0.15
    assert after > 0.95


def test_crf_leaves_a_prediction_that_matches_the_edges_unchanged():
    image, label = scene()
    g = torch.Generator().manual_seed(2)
    probs = (2 * F.one_hot(label, 3).permute(2, 0, 1).float() + 0.3 * torch.randn(3, H, W, generator=g)).softmax(0)
    refined = dense_crf(image, probs, CRFConfig())
    assert (refined.argmax(0) == probs.argmax(0)).float().mean() > 0.999


def test_crf_returns_probabilities_and_accepts_float_images():
    image, label = scene()
    probs = coarse_prediction(label)
    refined = dense_crf(image, probs, CRFConfig(iters=3))
    assert refined.shape == probs.shape
    assert (refined >= 0).all()
    torch.testing.assert_close(refined.sum(0), torch.ones(H, W))
    torch.testing.assert_close(dense_crf(image.float(), probs, CRFConfig(iters=3)), refined)


def test_crf_without_iterations_returns_the_input():
    image, label = scene()
    probs = coarse_prediction(label)
    torch.testing.assert_close(dense_crf(image, probs, CRFConfig(iters=0)), probs)


def test_crf_rejects_an_image_of_another_size():
    image, label = scene()
    with pytest.raises(ValueError, match="3xHxW image"):
        dense_crf(image[:, :10], coarse_prediction(label), CRFConfig())


@pytest.mark.parametrize("xy_std,rgb_std", [(8.0, 20.0), (80.0, 13.0)])
def test_lattice_approximates_exact_normalised_gaussian_filtering(xy_std, rgb_std):
    g = torch.Generator().manual_seed(0)
    h, w = 24, 32
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rgb = torch.where((xx < 12)[..., None], COLOURS[0], COLOURS[2]) + 10 * torch.randn(h, w, 3, generator=g)
    features = torch.cat([torch.stack([xx, yy], -1).view(-1, 2) / xy_std, rgb.view(-1, 3) / rgb_std], dim=1)
    values = torch.rand(h * w, 4, generator=g)
    out = torch.zeros_like(values)
    PermutohedralLattice(features).add_filtered(values, out)
    kernel = torch.exp(-torch.cdist(features, features) ** 2 / 2)
    norm = kernel.sum(1, keepdim=True).rsqrt()
    exact = norm * (kernel @ (norm * values))
    assert ((out - exact).abs() / exact).mean() < 0.05


def test_smoothness_kernel_is_an_exact_normalised_gaussian():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(H * W, 3, generator=g)
    out = torch.ones_like(values)
    GaussianBlur(H, W, std=3.0).add_filtered(values, out, weight=2.0)
    taps = torch.exp(-0.5 * (torch.arange(-9, 10.0) / 3) ** 2)
    kernel = (taps[:, None] * taps[None])[None, None]
    norm = F.conv2d(torch.ones(1, 1, H, W), kernel, padding=9).view(H * W, 1).rsqrt()
    blurred = F.conv2d((values * norm).t().reshape(3, 1, H, W), kernel, padding=9).reshape(3, -1).t()
    torch.testing.assert_close(out, 1 + 2 * norm * blurred, atol=1e-5, rtol=1e-5)
