"""Training with a suite's loss and schedule: iteration-based, poly learning-rate decay."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import torch
from torch import nn
from tqdm.auto import tqdm

from segbench.config.schema import TrainConfig
from segbench.errors import UserError


class TrainingDiverged(UserError):
    """Training met a non-finite loss. It stops there: the model's run is FAILED and no result of it is kept
    (a user's setting is the usual cause, so the CLI prints the one line and exits 2)."""


@dataclass
class TrainLog:
    """What training did: the loss at every iteration and the time it took."""

    iters: int
    seconds: float
    data_seconds: float = 0.0  # waiting for the loader to hand over a batch
    losses: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        tail = self.losses[-10:]
        return sum(tail) / len(tail) if tail else float("nan")


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def poly_lr(base_lr: float, iteration: int, max_iters: int, power: float, min_lr: float) -> float:
    """MMSegmentation's PolyLR: ``(base - min) * (1 - it / max) ** power + min``."""
    return (base_lr - min_lr) * (1 - iteration / max_iters) ** power + min_lr


def likely_cause(cfg: TrainConfig, iteration: int, lr: float) -> str:
    """The setting that most likely made the loss non-finite at ``iteration`` (0-based) under learning rate ``lr``."""
    if not math.isfinite(cfg.lr) or not math.isfinite(cfg.min_lr):
        return f"train.lr={cfg.lr} / train.min_lr={cfg.min_lr} are not finite numbers"
    if not math.isfinite(cfg.poly_power):
        return f"train.poly_power={cfg.poly_power} is not a finite number (the poly schedule's learning rate is NaN)"
    if cfg.min_lr > cfg.lr:
        return f"train.min_lr={cfg.min_lr} is above train.lr={cfg.lr} (the poly schedule raises the learning rate)"
    if not math.isfinite(lr):
        return (f"the poly schedule gives a learning rate of {lr} (train.lr={cfg.lr}, train.min_lr={cfg.min_lr}, "
                f"train.poly_power={cfg.poly_power})")
    if iteration == 0:
        return ("the inputs or the model's weights, before any update: non-finite pixels or normalisation "
                "(e.g. an image_std of 0) or non-finite weights")
    return f"train.lr={cfg.lr} is likely too high for train.optimizer={cfg.optimizer}; lower it"


def _all_finite(value: float, device: torch.device) -> bool:
    """Whether the loss ``value`` is finite on every rank (so that all ranks of a torchrun job stop together)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return math.isfinite(value)
    finite = torch.tensor(float(math.isfinite(value)), device=device)
    torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())


def _forever(loader: Iterable) -> Iterator:
    """The loader's batches, epoch after epoch (a distributed sampler reshuffles each epoch)."""
    epoch = 0
    while True:
        if hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


SINGLE_VALUE = "Expected more than 1 value per channel when training"  # batch norm on one value per channel


def _forward(model: nn.Module, images: torch.Tensor, desc: str) -> torch.Tensor:
    """``model(images)``; a batch too small for a batch-norm layer (one value per channel: a batch of one image
    after a global pooling, as in PSPNet's 1x1 bin) is the user's setting, said on one line."""
    try:
        return model(images)
    except ValueError as exc:
        if SINGLE_VALUE not in str(exc):
            raise
        raise UserError(f"{desc}: a batch-norm layer of the model sees one value per channel with "
                        f"{images.shape[0]} image(s) per step (after global pooling); use train.batch_size=2 or "
                        "more per process") from None


def train(model: nn.Module, loader: Iterable, loss_fn: nn.Module, cfg: TrainConfig,
          device: torch.device, desc: str = "train", progress: bool = True) -> TrainLog:
    """Train ``model`` in place for ``cfg.iters`` iterations over ``loader`` (cycled as needed); raise
    TrainingDiverged at the first non-finite loss, before it updates the weights."""
    model.to(device).train()
    loss_fn.to(device)
    optimizer = build_optimizer(model, cfg)
    log = TrainLog(iters=cfg.iters, seconds=0.0)
    start = time.perf_counter()
    bar = tqdm(total=cfg.iters, desc=desc, disable=None if progress else True, leave=False, dynamic_ncols=True)
    batches = islice(_forever(loader), cfg.iters)
    for iteration in range(cfg.iters):
        t0 = time.perf_counter()
        images, masks = next(batches)
        log.data_seconds += time.perf_counter() - t0
        lr = poly_lr(cfg.lr, iteration, cfg.iters, cfg.poly_power, cfg.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        loss = loss_fn(_forward(model, images, desc), masks)
        value = loss.item()
        if not _all_finite(value, device):
            bar.close()
            raise TrainingDiverged(f"{desc}: the loss is {value} at iteration {iteration + 1} of {cfg.iters} "
                                   f"(learning rate {lr:.3g}); likely cause: {likely_cause(cfg, iteration, lr)}; "
                                   "training stopped and the model's run is FAILED")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        log.losses.append(value)
        bar.set_postfix(loss=f"{log.losses[-1]:.3f}", lr=f"{lr:.2e}", refresh=False)
        bar.update()
    bar.close()
    log.seconds = time.perf_counter() - start
    return log
