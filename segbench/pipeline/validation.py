"""A suite's configuration, checked against every registry before any work starts (``load_config``)."""

from __future__ import annotations

import re
from pathlib import Path

from segbench.config.schema import OPTIMIZERS, SuiteConfig, read_config
from segbench.core.plugins import import_modules
from segbench.data import registry as datasets
from segbench.deploy.backends import BACKENDS, PRECISIONS
from segbench.deploy.timing import OOM_POLICIES
from segbench.errors import UserError, unknown
from segbench.evaluation.modes import check_eval_config
from segbench.metrics import confusion as metrics
from segbench.metrics.passport import check_passport_config
from segbench.models import registry as models
from segbench.models.pretrained import TIMM, published_backbone
from segbench.models.suite import check_models
from segbench.pipeline.sweep import parse_shard
from segbench.train import losses as losses


def load_config(overrides: list[str] | None = None) -> SuiteConfig:
    """Load the suite named by ``suite=`` (the embedded default otherwise), apply the overrides and validate."""
    cfg = read_config(overrides)
    # the user's components first (installed plugins, then the suite's imports:), so that their names resolve
    import_modules(cfg.imports, [suite_folder(overrides)])
    validate(cfg)
    return cfg


def suite_folder(overrides: list[str] | None) -> Path:
    """The folder of the suite file named by ``suite=`` (where its ``imports:`` may live), else the working one."""
    suite = next((o.partition("=")[2] for o in overrides or [] if o.startswith("suite=")), "")
    return Path(suite).resolve().parent if suite.endswith((".yaml", ".yml")) else Path.cwd()


def validate(cfg: SuiteConfig) -> None:
    """Check every name and number in ``cfg`` before any work starts."""
    if not cfg.models:
        raise UserError("models: the suite names no models; set models=[ARCH-BACKBONE,...]")
    if cfg.data.ignore_index < 0:
        raise UserError(f"data.ignore_index: expected a non-negative label, got {cfg.data.ignore_index}")
    splits = (cfg.data.train_split, cfg.data.val_split) if cfg.train.enabled else (cfg.data.val_split,)
    datasets.check_available(cfg.data, splits)  # first: a missing data root is the likeliest mistake
    specs = [models.parse_spec(spec, check=True) for spec in cfg.models]
    for name, path in cfg.weights.items():
        if name not in cfg.models:
            raise unknown("model", name, cfg.models) if cfg.models else UserError(f"weights: no model '{name}'")
        if not Path(path).exists():
            raise UserError(f"weights.{name}: checkpoint '{path}' does not exist")
    for name, path in cfg.backbone_weights.items():
        if name not in {s.backbone for s in specs}:
            raise UserError(f"backbone_weights.{name}: no model of the suite uses backbone '{name}'")
        if path == TIMM:
            published_backbone(name)  # in the cache, or fetched now, or a refusal when offline
        elif not Path(path).is_file():
            raise UserError(f"backbone_weights.{name}: weights file '{path}' does not exist (or write {TIMM} for "
                            "timm's published weights)")
    for name, rules in cfg.backbone_key_map.items():
        if name not in cfg.backbone_weights:
            raise UserError(f"backbone_key_map.{name}: no backbone_weights.{name} to rename keys for")
        for pattern in rules:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise UserError(f"backbone_key_map.{name}: '{pattern}' is not a regular expression ({exc})") from None
    for raw, cls in cfg.data.label_map.items():
        if not 0 <= raw <= 255 or not 0 <= cls <= 255:
            raise UserError(f"data.label_map: expected 8-bit mask values mapped to class indices, got {raw}: {cls}")
    # every model: weights found and checked on the meta device, classes matched by name, normalisation read
    check_models(cfg, datasets.dataset_info(cfg.data).classes)
    parse_shard(cfg.shard, "")  # the form of shard=, and the job array's variables for shard=auto
    if not cfg.train.loss:
        raise UserError("train.loss: name at least one loss term, e.g. train.loss={ce: 1.0}")
    for name in cfg.train.loss:
        losses.LOSSES.get(name)
    for name in cfg.eval.metrics:
        metrics.REGISTRY.get(name)
    check_passport_config(cfg.eval, cfg.data, len(datasets.dataset_info(cfg.data).classes))
    if cfg.train.optimizer not in OPTIMIZERS:
        raise unknown("optimizer", cfg.train.optimizer, OPTIMIZERS)
    if cfg.device != "auto" and not cfg.device.startswith(("cpu", "cuda", "mps")):
        raise UserError(f"device: expected auto, cpu, cuda, cuda:N or mps, got '{cfg.device}'")
    positive = {
        "train.iters": cfg.train.iters,
        "train.batch_size": cfg.train.batch_size,
        "eval.batch_size": cfg.eval.batch_size,
        "bench.iters": cfg.bench.iters,
        "bench.repeats": cfg.bench.repeats,
        "data.image_size": cfg.data.image_size,
        "data.train_samples": cfg.data.train_samples,
        "data.val_samples": cfg.data.val_samples,
    }
    for key, value in positive.items():
        if value <= 0:
            raise UserError(f"{key}: expected a positive integer, got {value}")
    if not cfg.bench.batch_sizes or min(cfg.bench.batch_sizes) <= 0:
        raise UserError(f"bench.batch_sizes: expected a list of positive integers, got {cfg.bench.batch_sizes}")
    if cfg.bench.precision not in PRECISIONS:
        raise unknown("precision", cfg.bench.precision, PRECISIONS)
    if cfg.bench.input_size is not None and (len(cfg.bench.input_size) != 2 or min(cfg.bench.input_size) <= 0):
        raise UserError(f"bench.input_size: expected [height, width], got {cfg.bench.input_size}")
    check_eval_config(cfg.eval)
    if cfg.train.lr <= 0:
        raise UserError(f"train.lr: expected a positive number, got {cfg.train.lr}")
    _check_backends(cfg)


def _check_backends(cfg: SuiteConfig) -> None:
    """Backend names known and listed once, the timing settings usable. A known backend that cannot run here
    (TensorRT without CUDA) is not an error: it is recorded as skipped, with its reason."""
    for key, names in (("bench.backends", cfg.bench.backends), ("eval.backends", cfg.eval.backends)):
        if not names:
            raise UserError(f"{key}: name at least one backend, e.g. {key}=[eager]")
        for name in names:
            try:
                BACKENDS.get(name)
            except UserError as exc:
                raise UserError(f"{key}: {exc}") from None
            if names.count(name) > 1:
                raise UserError(f"{key}: backend '{name}' is listed twice")
    if cfg.bench.oom not in OOM_POLICIES:
        raise UserError(f"bench.oom: expected one of {', '.join(OOM_POLICIES)}, got '{cfg.bench.oom}'")
    if not cfg.bench.min_seconds >= 0:
        raise UserError(f"bench.min_seconds: expected a non-negative number of seconds, got {cfg.bench.min_seconds}")
