"""Evaluation modes: whole image, sliding window or resized, with optional multi-scale and flip augmentation.

``predict_logits`` returns, at the input resolution, the model's logits for a single view (one scale,
no flip). With test-time augmentation it returns the log of the softmax probabilities averaged over
the views, as MMSegmentation averages softmax: its softmax is that average and its argmax the
prediction. Inputs are zero-padded at the bottom and right to a multiple of ``size_divisor``
(smp models need sides divisible by 32) and the logits cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segbench.config.schema import EvalConfig
from segbench.data.base import keep_ratio_size
from segbench.errors import UserError

MODES = ("whole", "slide", "resize")


def check_eval_config(cfg: EvalConfig) -> None:
    """Raise a UserError if the evaluation mode or its sizes are unusable."""
    if cfg.mode not in MODES:
        raise UserError(f"eval.mode: expected one of {', '.join(MODES)}, got '{cfg.mode}'")
    sizes = {"window": cfg.window, "stride": cfg.stride} if cfg.mode == "slide" else {}
    sizes.update({"resize": cfg.resize} if cfg.mode == "resize" else {})
    for key, value in sizes.items():
        if value is None or len(value) != 2 or min(value) <= 0:
            raise UserError(f"eval.{key}: mode '{cfg.mode}' needs eval.{key}=[a,b] of two positive integers, "
                            f"got {value}")
    if cfg.mode == "slide" and any(s > w for s, w in zip(cfg.stride, cfg.window)):
        raise UserError(f"eval.stride {list(cfg.stride)} is larger than eval.window {list(cfg.window)}: "
                        "some pixels would never be predicted")
    if not cfg.scales or min(cfg.scales) <= 0:
        raise UserError(f"eval.scales: expected a list of positive factors, got {cfg.scales}")


def describe_mode(cfg: EvalConfig) -> dict:
    """The evaluation mode as recorded with every result."""
    views = len(cfg.scales) * (2 if cfg.flip else 1)
    return {
        "mode": cfg.mode,
        "window": list(cfg.window) if cfg.mode == "slide" else None,
        "stride": list(cfg.stride) if cfg.mode == "slide" else None,
        "resize": list(cfg.resize) if cfg.mode == "resize" else None,
        "scales": list(cfg.scales),
        "flip": cfg.flip,
        "merge": "mean_softmax" if views > 1 else "logits",
    }


SIZE_DIVISOR = 32  # what models built here need their sides divisible by (smp's encoders, output stride 32)


def _forward(model: nn.Module, images: torch.Tensor, size_divisor: int) -> torch.Tensor:
    """Logits for ``images`` at their size: padded to ``size_divisor`` for the model, cropped back."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % size_divisor, -width % size_divisor
    logits = model(F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images)
    if logits.shape[-2:] != (height + pad_h, width + pad_w):
        logits = F.interpolate(logits, size=(height + pad_h, width + pad_w), mode="bilinear", align_corners=False)
    return logits[..., :height, :width]


def _windows(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``length`` (MMSegmentation's grid; the last window ends at the edge)."""
    count = max(length - window + stride - 1, 0) // stride + 1
    return sorted({max(min(i * stride + window, length) - window, 0) for i in range(count)})


def slide(model: nn.Module, images: torch.Tensor, window: tuple[int, int], stride: tuple[int, int],
          num_classes: int, size_divisor: int = SIZE_DIVISOR) -> torch.Tensor:
    """Logits averaged over overlapping windows (a count map divides the sum); an image smaller than the
    window is padded to it."""
    height, width = images.shape[-2:]
    padded = F.pad(images, (0, max(window[1] - width, 0), 0, max(window[0] - height, 0)))
    full_h, full_w = padded.shape[-2:]
    total = images.new_zeros(images.shape[0], num_classes, full_h, full_w)
    count = images.new_zeros(1, 1, full_h, full_w)
    for top in _windows(full_h, window[0], stride[0]):
        for left in _windows(full_w, window[1], stride[1]):
            crop = padded[..., top:top + window[0], left:left + window[1]]
            total[..., top:top + window[0], left:left + window[1]] += _forward(model, crop, size_divisor)
            count[..., top:top + window[0], left:left + window[1]] += 1
    return (total / count)[..., :height, :width]


def _single_view(model: nn.Module, images: torch.Tensor, cfg: EvalConfig, num_classes: int,
                 size_divisor: int) -> torch.Tensor:
    if cfg.mode == "slide":
        return slide(model, images, tuple(cfg.window), tuple(cfg.stride), num_classes, size_divisor)
    return _forward(model, images, size_divisor)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, cfg: EvalConfig, num_classes: int,
                   size_divisor: int = SIZE_DIVISOR) -> torch.Tensor:
    """NxKxHxW logits for NxCxHxW ``images`` in ``cfg.mode`` (see the module docstring for what TTA returns)."""
    height, width = images.shape[-2:]
    views = [(scale, flip) for scale in cfg.scales for flip in ((False, True) if cfg.flip else (False,))]
    merged = None
    for scale, flip in views:
        if cfg.mode == "resize":
            size = keep_ratio_size(height, width, (cfg.resize[0] * scale, cfg.resize[1] * scale))
        else:
            size = (max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5)))
        view = images if size == (height, width) else F.interpolate(images, size=size, mode="bilinear",
                                                                    align_corners=False)
        logits = _single_view(model, view.flip(-1) if flip else view, cfg, num_classes, size_divisor)
        logits = logits.flip(-1) if flip else logits
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        if len(views) == 1:
            return logits
        probs = logits.softmax(dim=1)
        merged = probs if merged is None else merged + probs
    return (merged / len(views)).log()
