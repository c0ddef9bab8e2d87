"""Deployment parity: the suite's evaluation repeated under each backend of ``eval.backends``; each backend's
metrics and its difference from eager, so that a deployed model is proven to score what eager PyTorch scores.

Eager is the record's own evaluation (``status: reference``); a backend that cannot run here is recorded as
``skipped`` with its reason. Differences are fractions (backend minus eager), as every quality figure in
results.json; ``segbench gate --max-backend-diff`` bounds them in percentage points.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from segbench.config.schema import SuiteConfig
from segbench.config.typed import plain
from segbench.data.registry import DatasetInfo, make_loader
from segbench.deploy.backends import BackendUnavailable, DeployedModule, deploy
from segbench.errors import warn
from segbench.evaluation.loop import evaluate, score_split
from segbench.evaluation.modes import SIZE_DIVISOR
from segbench.metrics.confusion import METRICS
from segbench.results.schema import ModelRecord
from segbench.results.speed import BackendEvaluation


def _padded(images: torch.Tensor, divisor: int) -> torch.Tensor:
    """The images as the evaluator hands them to the model: padded to a multiple of ``divisor``."""
    height, width = images.shape[-2:]
    return F.pad(images, (0, -width % divisor, 0, -height % divisor))


def _first_batch_agreement(model: nn.Module, deployed: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Largest |logit difference| and the share of pixels with the same argmax, eager against the backend."""
    with torch.no_grad():
        reference, got = model(images), deployed(images).to(images.device)
    return {"max_abs_logit_difference": float((reference - got).abs().max()),
            "prediction_agreement": float((reference.argmax(1) == got.argmax(1)).float().mean())}


def _difference(metrics: dict, eager: dict) -> dict[str, float | None]:
    return {k: (v - eager[k] if v is not None and eager.get(k) is not None else None) for k, v in metrics.items()}


def evaluate_backends(name: str, model: nn.Module, eager: ModelRecord, cfg: SuiteConfig, info: DatasetInfo,
                      val_set: Dataset, device: torch.device) -> list[BackendEvaluation]:
    """One entry per backend of ``cfg.eval.backends`` (results.json ``evaluation.backends``), compared with the
    eager evaluation's model record ``eager``."""
    eager_metrics = {k: eager.metrics[k] for k in METRICS}
    divisor = getattr(model, "size_divisor", SIZE_DIVISOR)
    entries = []
    for backend in cfg.eval.backends:
        if backend == "eager":
            entries.append(BackendEvaluation(
                backend="eager", status="reference", precision="fp32", provider="torch", metrics=eager_metrics,
                difference=_difference(eager_metrics, eager_metrics), images=eager.evaluation.images,
                seconds=eager.evaluation.seconds))
            continue
        loader = make_loader(val_set, cfg.eval.batch_size, False, cfg.data.num_workers, device, cfg.seed)
        example = _padded(next(iter(loader))[0].to(device), divisor)
        start = time.perf_counter()
        try:
            deployed = deploy(backend, model, example, dynamic_spatial=True)
        except BackendUnavailable as exc:
            warn(f"{name}: backend {backend} not evaluated: {exc.reason}")
            entries.append(BackendEvaluation(backend=backend, status="skipped", reason=exc.reason))
            continue
        wrapped = DeployedModule(deployed, divisor)
        result = evaluate(wrapped, loader, info.num_classes, info.ignore_index, device, cfg.eval,
                          desc=f"eval {name} [{backend}]", progress=cfg.progress)
        metrics = score_split(result, val_set).metrics
        entries.append(BackendEvaluation(backend=backend, precision=deployed.precision, provider=deployed.provider,
                                         metrics=metrics, difference=_difference(metrics, eager_metrics),
                                         images=result.images, seconds=time.perf_counter() - start,
                                         details=plain(deployed.describe()),
                                         **_first_batch_agreement(model, wrapped, example)))
    return entries
