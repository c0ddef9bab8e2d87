"""Evaluation modes: sliding windows against whole images, flip and multi-scale TTA, resize mode."""

import pytest
import torch
from torch import nn

from segbench.config.schema import EvalConfig, from_dict
from segbench.errors import UserError
from segbench.evaluation.modes import check_eval_config, describe_mode, predict_logits

K = 4


def conv_model(kernel: int, seed: int = 0, symmetric: bool = False) -> nn.Module:
    """One conv layer, zero padding: its receptive field is ``kernel`` x ``kernel`` pixels."""
    torch.manual_seed(seed)
    model = nn.Conv2d(3, K, kernel, padding=kernel // 2)
    if symmetric:  # mirror the kernel left-right: the model commutes with a horizontal flip
        with torch.no_grad():
            model.weight.copy_((model.weight + model.weight.flip(-1)) / 2)
    return model.eval()


def images(height: int, width: int, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_sliding_windows_equal_the_whole_image_for_a_1x1_model():
    """Every window sees exactly the pixels' own inputs; windows overlap at most twice here, so the average
    (x + x) / 2 is exact in floating point and the results are bit-identical."""
    model, x = conv_model(1), images(64, 96)
    whole = predict_logits(model, x, EvalConfig(), K)
    slide = predict_logits(model, x, EvalConfig(mode="slide", window=[32, 64], stride=[32, 32]), K)
    assert slide.shape == whole.shape == (2, K, 64, 96)
    assert torch.equal(slide, whole)
    # windows that do not tile the image (the last one is moved back inside) and more overlap: equal up to rounding
    odd = predict_logits(model, images(50, 70), EvalConfig(mode="slide", window=[32, 32], stride=[12, 20]), K)
    assert torch.allclose(odd, predict_logits(model, images(50, 70), EvalConfig(), K), atol=1e-6)


def test_sliding_windows_with_a_3x3_model_are_exact_where_the_receptive_field_fits_every_window():
    """Image 64x96, windows 64x64 at columns 0 and 32. A 3x3 conv (zero padding) gives the whole-image value at a
    pixel whose 3x3 neighbourhood lies inside the window, or leaves it only where the window edge is the image
    edge. Column 32 is the left edge of the second window (its neighbour 31 is outside it) and column 63 the right
    edge of the first (neighbour 64 outside): there the window's value is wrong, and averaging it with the
    other window's correct value cannot repair it. Every other column is covered only by windows that contain its
    neighbourhood, with at most two windows (an exact average): equal bit for bit. No overlap makes every pixel
    exact for a receptive field wider than one pixel; only pixels away from inner window edges are."""
    model, x = conv_model(3), images(64, 96)
    whole = predict_logits(model, x, EvalConfig(), K)
    slide = predict_logits(model, x, EvalConfig(mode="slide", window=[64, 64], stride=[32, 32]), K)
    inner_edges = [32, 63]
    safe = [c for c in range(96) if c not in inner_edges]
    assert torch.equal(slide[..., safe], whole[..., safe])
    for column in inner_edges:
        assert not torch.allclose(slide[..., column], whole[..., column])


def test_an_image_smaller_than_the_window_is_padded():
    model, x = conv_model(1), images(20, 30)
    slide = predict_logits(model, x, EvalConfig(mode="slide", window=[32, 64], stride=[16, 32]), K)
    assert slide.shape == (2, K, 20, 30)
    assert torch.equal(slide, predict_logits(model, x, EvalConfig(), K))


def test_flip_augmentation_on_a_flip_equivariant_model_equals_no_augmentation():
    x = images(32, 48)
    symmetric = conv_model(3, symmetric=True)
    plain = predict_logits(symmetric, x, EvalConfig(), K)
    flipped = predict_logits(symmetric, x, EvalConfig(flip=True), K)
    assert torch.allclose(flipped.softmax(1), plain.softmax(1), atol=1e-6)  # TTA returns log mean probabilities
    assert torch.allclose(flipped.exp().sum(1), torch.ones(2, 32, 48), atol=1e-5)
    lopsided = conv_model(3, seed=3)
    assert not torch.allclose(predict_logits(lopsided, x, EvalConfig(flip=True), K).softmax(1),
                              predict_logits(lopsided, x, EvalConfig(), K).softmax(1), atol=1e-3)


def test_multi_scale_averages_probabilities_at_the_input_size():
    model = conv_model(1)
    constant = torch.ones(1, 3, 32, 48) * torch.tensor([0.5, -1.0, 2.0])[None, :, None, None]
    merged = predict_logits(model, constant, EvalConfig(scales=[0.5, 1.0, 1.5], flip=True), K)
    assert merged.shape == (1, K, 32, 48)
    assert torch.allclose(merged.softmax(1), predict_logits(model, constant, EvalConfig(), K).softmax(1), atol=1e-6)


class Spy(nn.Module):
    """Records the size of each input and returns logits at a quarter of it (like a stride-4 head)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        return torch.zeros(x.shape[0], K, x.shape[-2] // 4, x.shape[-1] // 4)


def test_resize_mode_predicts_at_the_fitted_size_and_returns_the_input_size():
    spy = Spy()
    out = predict_logits(spy, images(40, 60, n=1), EvalConfig(mode="resize", resize=[64, 32]), K, size_divisor=1)
    assert spy.sizes == [(32, 48)]  # fits 64x32 (long x short) keeping the 3:2 ratio
    assert out.shape == (1, K, 40, 60)
    spy.sizes.clear()
    predict_logits(spy, images(40, 60, n=1), EvalConfig(mode="resize", resize=[64, 32]), K)
    assert spy.sizes == [(32, 64)]  # then padded to multiples of 32 for the model
    assert predict_logits(spy, images(30, 50, n=1), EvalConfig(), K).shape == (1, K, 30, 50)


def test_describe_mode_and_config_checks():
    cfg = EvalConfig(mode="slide", window=[1024, 1024], stride=[768, 768], scales=[0.5, 1.0], flip=True)
    assert describe_mode(cfg) == {"mode": "slide", "window": [1024, 1024], "stride": [768, 768], "resize": None,
                                  "scales": [0.5, 1.0], "flip": True, "merge": "mean_softmax"}
    assert describe_mode(EvalConfig())["merge"] == "logits"
    check_eval_config(cfg)
    with pytest.raises(UserError, match="eval.mode: expected one of whole, slide, resize"):  # declared on the field
        from_dict({"mode": "tiles"}, EvalConfig, where="eval.")
    with pytest.raises(UserError, match="eval.window: mode 'slide' needs"):
        check_eval_config(EvalConfig(mode="slide", stride=[8, 8]))
    with pytest.raises(UserError, match="larger than eval.window"):
        check_eval_config(EvalConfig(mode="slide", window=[8, 8], stride=[16, 8]))
    with pytest.raises(UserError, match="eval.resize: mode 'resize' needs"):
        check_eval_config(EvalConfig(mode="resize"))


class BrokenForSome(nn.Module):
    """A 1x1 conv whose logits are NaN for images whose first pixel is negative (a diverged model's output)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = conv_model(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        broken = x[:, 0, 0, 0] < 0
        return torch.where(broken[:, None, None, None], torch.full_like(out, float("nan")), out)


@pytest.mark.parametrize("passport", [False, True])
def test_evaluation_of_non_finite_logits_says_so(capsys, passport):
    from segbench.config.schema import DataConfig
    from segbench.data.base import DatasetInfo
    from segbench.evaluation.loop import evaluate
    from segbench.metrics.passport import Passport

    x = images(32, 32, n=5, seed=3)
    x[:, 0, 0, 0] = torch.tensor([1.0, -1.0, 2.0, -3.0, float("inf")])  # images 1 and 3 give NaN
    masks = torch.zeros(5, 32, 32, dtype=torch.int64)
    loader = [(x[i:i + 2], masks[i:i + 2]) for i in range(0, 5, 2)]
    info = DatasetInfo("t", tuple("abcd"), ((0, 0, 0),) * 4)
    book = Passport.build(EvalConfig(), DataConfig(), info, None, "cpu") if passport else None
    result = evaluate(BrokenForSome(), loader, K, 255, torch.device("cpu"), desc="eval broken", progress=False,
                      passport=book)
    assert result.nonfinite_images == 3  # the inf input gives non-finite logits too
    assert result.invalid_reason.startswith("non-finite logits (NaN or inf) in 3 evaluated images")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"segbench: warning: eval broken: {result.invalid_reason}; the model is marked invalid in "
                   "results.json"]
    healthy = evaluate(conv_model(1), [(x[:1], masks[:1])], K, 255, torch.device("cpu"), progress=False)
    assert healthy.invalid_reason is None and capsys.readouterr().err == ""
