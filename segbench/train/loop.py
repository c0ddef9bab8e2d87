"""Training with a suite's loss and schedule: iteration-based, poly learning-rate decay."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from segbench.config.schema import TrainConfig
from segbench.core.interrupts import Interrupted, deferred, pending
from segbench.errors import UserError
from segbench.train.state import LoaderCursor, rng_states, set_rng_states

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    val_curve: list[list[float]] = field(default_factory=list)  # [iteration, mIoU] at each validation
    best_iter: int | None = None  # train.keep=best: the iteration whose weights were kept
    resumed_at: list[int] = field(default_factory=list)  # iterations training continued from after a stop

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


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """``torch.autocast`` to ``precision`` (fp32: a no-op) on ``device``'s type."""
    return torch.autocast(device.type, dtype=DTYPES[precision], enabled=precision != "fp32")


def memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    """``model`` in channels-last memory format when asked (its images must follow with ``as_format``)."""
    return model.to(memory_format=torch.channels_last) if channels_last else model


def as_format(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last) if channels_last and images.dim() == 4 else images


Validate = Callable[[nn.Module], float]  # the model -> its validation mIoU
SaveState = Callable[[dict[str, Any], bool], Any]  # (state, stopping) -> where it was written


def train(model: nn.Module, loader: Iterable, loss_fn: nn.Module, cfg: TrainConfig,
          device: torch.device, desc: str = "train", progress: bool = True, state: dict[str, Any] | None = None,
          save: SaveState | None = None, validate: Validate | None = None) -> TrainLog:
    """Train ``model`` in place for ``cfg.iters`` iterations over ``loader`` (cycled as needed), from ``state``
    (a training state ``save`` was given before) if any; raise TrainingDiverged at the first non-finite loss,
    before it updates the weights. A signal stops it between iterations: ``save`` writes the state first.
    ``validate`` is called every ``cfg.eval_every`` iterations; ``cfg.keep=best`` ends on the best weights."""
    inner = getattr(model, "module", model)  # under DistributedDataParallel: the model itself
    memory_format(model.to(device), cfg.channels_last).train()
    loss_fn.to(device)
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    log = TrainLog(iters=cfg.iters, seconds=0.0)
    cursor = LoaderCursor(loader)
    first, best, best_weights = 0, -math.inf, None
    if state is not None:
        inner.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        first, best, best_weights = state["iteration"], state["best"], state["best_weights"]
        for key in ("seconds", "data_seconds", "losses", "val_curve", "best_iter", "resumed_at"):
            setattr(log, key, state["log"][key])
        log.resumed_at = [*log.resumed_at, first]
        if first < cfg.iters:  # batches still to draw: the loader continues where it was
            cursor.restore(state["loader"])
        set_rng_states(state["rng"])

    def snapshot(iteration: int) -> dict[str, Any]:
        return {"model": inner.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "iteration": iteration, "best": best, "best_weights": best_weights, "loader": cursor.state(),
                "rng": rng_states(), "log": {key: getattr(log, key) for key in (
                    "seconds", "data_seconds", "losses", "val_curve", "best_iter", "resumed_at")}}

    start = time.perf_counter() - log.seconds
    bar = tqdm(total=cfg.iters, initial=first, desc=desc, disable=None if progress else True, leave=False,
               dynamic_ncols=True)
    with deferred():
        for iteration in range(first, cfg.iters):
            t0 = time.perf_counter()
            images, masks = next(cursor)
            log.data_seconds += time.perf_counter() - t0
            lr = poly_lr(cfg.lr, iteration, cfg.iters, cfg.poly_power, cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = as_format(images.to(device, non_blocking=True), cfg.channels_last)
            masks = masks.to(device, non_blocking=True)
            with autocast(device, cfg.precision):
                loss = loss_fn(_forward(model, images, desc), masks)
            value = loss.item()
            if not _all_finite(value, device):
                bar.close()
                raise TrainingDiverged(f"{desc}: the loss is {value} at iteration {iteration + 1} of {cfg.iters} "
                                       f"(learning rate {lr:.3g}); likely cause: {likely_cause(cfg, iteration, lr)}; "
                                       "training stopped and the model's run is FAILED")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            log.losses.append(value)
            bar.set_postfix(loss=f"{log.losses[-1]:.3f}", lr=f"{lr:.2e}", refresh=False)
            bar.update()
            done = iteration + 1
            if validate is not None and cfg.eval_every and done % cfg.eval_every == 0:
                score = _validated(model, validate)
                log.val_curve.append([done, score])
                if cfg.keep == "best" and score > best:  # NaN never counts as better
                    best, log.best_iter = score, done
                    best_weights = {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}
            log.seconds = time.perf_counter() - start
            signum = pending()
            every = cfg.checkpoint_every  # and at the end: a stop during evaluation need not train again
            if save is not None and (signum is not None or (every and (done % every == 0 or done == cfg.iters))):
                save(snapshot(done), signum is not None)
            if signum is not None:
                bar.close()
                raise Interrupted(signum)
    bar.close()
    if best_weights is not None:
        inner.load_state_dict(best_weights)
    log.seconds = time.perf_counter() - start
    return log


def _validated(model: nn.Module, validate: Validate) -> float:
    """``validate(model)`` in eval mode, leaving the global RNGs and the training mode as they were."""
    states = rng_states()
    model.eval()
    try:
        return float(validate(model))
    finally:
        model.train()
        set_rng_states(states)
