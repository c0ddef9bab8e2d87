"""A suite's configuration, checked against every registry before any work starts (``load_config``). Types and
ranges are declared on the fields (``segbench.config.schema``) and checked when the suite is read; what is left here
needs a registry, the data set or the machine: names, files, one value per class, memory."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from segbench.config.schema import PER_CLASS, SuiteConfig, read_config
from segbench.config.typed import field_hints
from segbench.core.environment import resolve_device
from segbench.core.plugins import import_modules
from segbench.data import registry as datasets
from segbench.deploy.backends import BACKENDS
from segbench.errors import UserError, unknown
from segbench.evaluation.modes import check_eval_config
from segbench.metrics import confusion as metrics
from segbench.metrics.passport import check_passport_config
from segbench.models import registry as models
from segbench.models.pretrained import TIMM, published_backbone
from segbench.models.suite import check_models
from segbench.pipeline.sweep import parse_shard
from segbench.train import losses as losses

# Bytes a forward pass holds per input byte (activations of a segmentation network, inference and training); an
# estimate above the memory available is refused before anything is allocated.
ACTIVATION_FACTOR = {"inference": 16, "training": 64}


def load_config(overrides: list[str] | None = None, check: Callable[[SuiteConfig], None] | None = None) -> SuiteConfig:
    """Load the suite named by ``suite=`` (the embedded default otherwise), apply the overrides and validate it
    (``check``: ``validate`` by default; ``validate_scoring`` for commands that run no model)."""
    cfg = read_config(overrides)
    # the user's components first (installed plugins, then the suite's imports:), so that their names resolve
    import_modules(cfg.imports, [suite_folder(overrides)])
    (check or validate)(cfg)
    return cfg


def suite_folder(overrides: list[str] | None) -> Path:
    """The folder of the suite file named by ``suite=`` (where its ``imports:`` may live), else the working one."""
    suite = next((o.partition("=")[2] for o in overrides or [] if o.startswith("suite=")), "")
    return Path(suite).resolve().parent if suite.endswith((".yaml", ".yml")) else Path.cwd()


def validate(cfg: SuiteConfig) -> None:
    """Check every name in ``cfg`` against its registry, and what its values need of the data set and the machine,
    before any work starts."""
    if not cfg.models:
        raise UserError("models: the suite names no models; set models=[ARCH-BACKBONE,...]")
    validate_scoring(cfg)
    specs = [models.parse_spec(spec, check=True) for spec in cfg.models]
    _check_files(cfg, {s.backbone for s in specs})
    # published models: weights found and classes matched to the suite's by name (eval.class_map)
    # every model: weights found and checked on the meta device, classes matched by name, normalisation read
    check_models(cfg, datasets.dataset_info(cfg.data).classes)
    parse_shard(cfg.shard, "")  # the form of shard=, and the job array's variables for shard=auto
    if not cfg.train.loss:
        raise UserError("train.loss: name at least one loss term, e.g. train.loss={ce: 1.0}")
    for name in cfg.train.loss:
        losses.LOSSES.get(name)
    check_eval_config(cfg.eval)
    _check_backends(cfg)
    _check_memory(cfg)


def validate_scoring(cfg: SuiteConfig) -> None:
    """What scoring predictions needs of ``cfg`` (``segbench score``, and every command before its models): the
    data set and its splits, the metrics and the passport's settings."""
    _check_cache_folder()
    splits = (cfg.data.train_split, cfg.data.val_split) if cfg.train.enabled else (cfg.data.val_split,)
    datasets.check_available(cfg.data, splits)  # first: a missing data root is the likeliest mistake
    info = datasets.dataset_info(cfg.data)
    _check_per_class(cfg, len(info.classes))
    for name in cfg.eval.metrics:
        metrics.REGISTRY.get(name)
    check_passport_config(cfg.eval, cfg.data, len(info.classes))
    _check_user_metrics(cfg, info)


def _check_cache_folder() -> None:
    """``$SEGBENCH_CACHE_DIR`` names a folder, or nothing yet: not a file (checked before its first use)."""
    from segbench.core.files import cache_dir

    folder = cache_dir()
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UserError(f"SEGBENCH_CACHE_DIR={os.environ.get('SEGBENCH_CACHE_DIR', '')!r}: segbench's cache folder "
                        f"{folder} cannot be made, '{blocking}' is a file; name a folder")


TRIAL = (2, 16, 16)  # the batch of labels a user's metric is updated with before the run


def _check_user_metrics(cfg: SuiteConfig, info: datasets.DatasetInfo) -> None:
    """Each user's metric the evaluation will update (``imports:``, plugins) takes one trial batch of random labels
    without raising: a mistake in ``update`` is one line naming the metric, before the run. A metric whose
    ``build`` needs what only the run has (the data set) is left to the run."""
    import torch

    from segbench.metrics.protocol import Batch, Setup
    from segbench.metrics.registry import REGISTRY, accumulators

    if not cfg.eval.passport:
        return
    users = {e.accumulator: name for name, e in REGISTRY.items() if e.origin and e.accumulator in accumulators()}
    generator = torch.Generator().manual_seed(0)
    labels = [torch.randint(0, info.num_classes, TRIAL, generator=generator) for _ in range(2)]
    batch = Batch(labels[0], labels[1], torch.rand(TRIAL, generator=generator), {})
    for accumulator, name in users.items():
        try:
            part = accumulator.build(Setup(info, cfg.eval, cfg.data, None, "cpu"))
        except Exception:
            continue
        if part is None or part.reader is not None:
            continue
        try:
            with torch.no_grad():
                part.update(batch)
        except (Exception, SystemExit) as exc:
            raise UserError(f"metric '{name}' ({accumulator.__module__}.{accumulator.__qualname__}): its update raised "
                            f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}, on a trial batch of "
                            f"{' x '.join(map(str, TRIAL))} labels (checked before the run)") from None


def _check_files(cfg: SuiteConfig, backbones: set[str]) -> None:
    """Weights files that exist, for models and backbones of the suite; key maps that are regular expressions."""
    for name, path in cfg.weights.items():
        if name not in cfg.models:
            raise unknown("model", name, cfg.models)
        if not Path(path).exists():
            raise UserError(f"weights.{name}: checkpoint '{path}' does not exist")
    for name, path in cfg.backbone_weights.items():
        if name not in backbones:
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


def _check_per_class(cfg: SuiteConfig, num_classes: int) -> None:
    """Every list declared with one value per class (``PER_CLASS``) holds ``num_classes`` values."""
    for section_name in ("data", "train", "eval", "bench"):
        section = getattr(cfg, section_name)
        for name, hint in field_hints(type(section)).items():
            value = getattr(section, name)
            if PER_CLASS in getattr(_unwrap(hint), "__metadata__", ()) and value is not None \
                    and len(value) != num_classes:
                raise UserError(f"{section_name}.{name}: expected one number per class ({num_classes} for "
                                f"{cfg.data.name}), got {len(value)}")


def _unwrap(hint: object) -> object:
    """``X | None`` as X (the Annotated list that carries the per-class mark)."""
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    return args[0] if len(args) == 1 and not hasattr(hint, "__metadata__") else hint


def _check_backends(cfg: SuiteConfig) -> None:
    """Backend names known and listed once. A known backend that cannot run here (TensorRT without CUDA) is not an
    error: it is recorded as skipped, with its reason."""
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


def available_memory() -> int | None:
    """Bytes of memory the system can give a new allocation (Linux's MemAvailable), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(cfg: SuiteConfig) -> None:
    """On the CPU, refuse a batch whose estimated memory (batch x 3 x H x W x 4 bytes x ACTIVATION_FACTOR) exceeds
    the memory available, before anything is allocated: the CPU has no out-of-memory error to recover from."""
    device = resolve_device(cfg.device)  # also refuses cuda or mps where there is none
    if device.type == "cuda":
        import torch

        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device: '{cfg.device}' names no GPU of this machine (it has "
                            f"{torch.cuda.device_count()}: cuda:0..cuda:{torch.cuda.device_count() - 1})")
    available = available_memory()
    if device.type != "cpu" or available is None:
        return
    known_size = datasets.DATASETS.get(cfg.data.name).image_size
    synthetic = known_size(cfg.data) if known_size is not None else None
    scale = max(cfg.eval.scales)
    eval_size = synthetic and (round(synthetic[0] * scale), round(synthetic[1] * scale))
    demands = [(f"bench.batch_sizes={batch}", batch, cfg.bench.input_size or (cfg.data.image_size,) * 2, "inference")
               for batch in (cfg.bench.batch_sizes if cfg.bench.enabled else [])]
    demands.append(("eval.batch_size", cfg.eval.batch_size, eval_size, "inference"))
    if cfg.train.enabled:
        demands.append(("train.batch_size", cfg.train.batch_size, cfg.data.crop_size or synthetic, "training"))
    for key, batch, size, kind in demands:
        if size is None:
            continue
        need = batch * 3 * size[0] * size[1] * 4 * ACTIVATION_FACTOR[kind]
        if need > available:
            raise UserError(f"{key.split('=')[0]}: a batch of {batch} at {size[0]}x{size[1]} would need about "
                            f"{need / 2**30:.1f} GiB for {kind} on the CPU, and {available / 2**30:.1f} GiB are "
                            "available; use a smaller batch or input size")
