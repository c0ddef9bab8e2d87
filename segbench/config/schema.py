"""Suite configuration: the typed schema, YAML files in suites/ and Hydra-style ``key=value`` overrides.

A leaf of the package: it imports no other segbench module but ``errors``. Names are checked against the
registries in ``segbench.pipeline.validation``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segbench.errors import UserError, closest, unknown

DEFAULT_SUITE = "synthetic"
OPTIMIZERS = ("sgd", "adamw", "adam")


@dataclass
class DataConfig:
    name: str = "synthetic"
    root: str | None = None  # on-disk data sets; suites may use ${oc.env:VAR,null}
    train_split: str = "train"
    val_split: str = "val"
    ignore_index: int = 255
    num_workers: int = 0
    skip_bad: bool = False  # skip (and count) bad samples instead of refusing to start
    label_map: dict[int, int] = field(default_factory=dict)  # raw mask value -> class index (e.g. {255: 1})
    # synthetic data set
    image_size: int = 64
    train_samples: int = 4096
    val_samples: int = 256
    # folder data set: class names (and optional colours), label 0 ignored if reduce_zero_label
    classes: list[str] | None = None
    palette: list[list[int]] | None = None
    reduce_zero_label: bool = False
    # training transforms (image and mask together)
    base_size: list[int] | None = None  # (width, height) the scale range refers to, as MMSegmentation
    scale_range: list[float] = field(default_factory=lambda: [1.0, 1.0])
    crop_size: list[int] | None = None  # (height, width)
    flip: bool = False
    photometric: bool = False
    spacing: list[float] | None = None  # physical size of a pixel (row, column): HD95 and NSD in those units


@dataclass
class TrainConfig:
    enabled: bool = True
    iters: int = 300
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    min_lr: float = 0.0
    loss: dict[str, float] = field(default_factory=lambda: {"ce": 1.0})
    class_weights: list[float] | None = None
    save_checkpoint: bool = True  # safetensors weights and their config in the output folder
    sync_bn: bool = False  # under torchrun: batch-norm statistics over the global batch (SyncBatchNorm)


@dataclass
class CRFConfig:
    """Fully connected CRF post-processing (DeepLab v1 defaults)."""

    enabled: bool = False
    iters: int = 10
    pos_xy_std: float = 3.0
    pos_weight: float = 3.0
    bi_xy_std: float = 80.0
    bi_rgb_std: float = 13.0
    bi_weight: float = 4.0


@dataclass
class EvalConfig:
    batch_size: int = 16
    mode: str = "whole"  # whole | slide | resize
    window: list[int] | None = None  # slide: (height, width)
    stride: list[int] | None = None  # slide: (height, width)
    resize: list[int] | None = None  # resize: (width, height) to fit the image in, keeping its ratio
    scales: list[float] = field(default_factory=lambda: [1.0])  # multi-scale test-time augmentation
    flip: bool = False  # horizontal-flip test-time augmentation
    crf: CRFConfig = field(default_factory=CRFConfig)
    metrics: list[str] = field(default_factory=lambda: ["mIoU", "mDice", "aAcc"])  # shown in the leaderboard
    # published models' classes -> the suite's: MODEL_CLASS: SUITE_CLASS, or NAME: null for a class not shared
    class_map: dict[str, str | None] = field(default_factory=dict)
    # the metric passport (segbench list metrics), computed in the same pass; false: the confusion matrix only
    passport: bool = True
    boundary_dilation: float = 0.02  # Boundary IoU band width, as a share of the image diagonal
    calibration_bins: int = 15  # ECE bins
    foreground_classes: list[int] | None = None  # headline fgIoU/fgDice and per-case table; default [1] if 2 classes
    surface: bool | None = None  # HD95 and NSD per case (CPU); default: on for 2-class suites
    surface_tolerance: float = 1.0  # NSD tolerance in pixels, or in data.spacing units
    save_predictions: bool = False  # label PNGs in the data set's own ids, and colour overlays
    overlays: int = 4  # overlays per model when saving predictions
    # deployment parity: each backend evaluated on the split, its metrics and difference from eager recorded
    backends: list[str] = field(default_factory=lambda: ["eager"])
    # robustness: also evaluate under these corruptions (names, groups noise/blur/weather/digital, or all) at these
    # severities (1..5); see docs/robustness.md
    corruptions: list[str] = field(default_factory=list)
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])


@dataclass
class BenchConfig:
    enabled: bool = True
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    input_size: list[int] | None = None  # (height, width); default: the data set's evaluation size
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    channels_last: bool = False
    backends: list[str] = field(default_factory=lambda: ["eager"])  # eager, compile, onnxruntime, tensorrt
    isolate: bool = True  # segbench bench: time each model in a fresh process
    min_seconds: float = 0.0  # keep timing blocks of iters until at least this much time is timed
    oom: str = "fail"  # fail (a one-line error naming the batch size) | halve (halve the batch, record it)
    warmup: int = 5
    warmup_seconds: float = 0.0
    iters: int = 20
    repeats: int = 3


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None


@dataclass
class SuiteConfig:
    name: str = DEFAULT_SUITE
    description: str = ""
    models: list[str] = field(default_factory=list)
    weights: dict[str, str] = field(default_factory=dict)  # model name -> local checkpoint (file or folder)
    backbone_weights: dict[str, str] = field(default_factory=dict)  # timm backbone -> local weights file, or timm
    backbone_key_map: dict[str, dict[str, str]] = field(default_factory=dict)  # backbone -> {regex: replacement}
    # model or backbone -> the input normalisation its weights were trained with: imagenet, timm, or
    # {mean: [R, G, B], std: [R, G, B], input_range: [LOW, HIGH]} (see segbench.models.normalisation)
    normalisation: dict[str, Any] = field(default_factory=dict)
    accept_uninitialised: list[str] = field(default_factory=list)  # models whose weights may leave tensors random
    seed: int = 0
    device: str = "auto"
    output_dir: str | None = None
    shard: str | None = None  # I/N: run shard I (from 0) of N of the suite's models; auto: from the job array
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# Keys that do not change the numbers a suite produces; left out of its hash.
UNHASHED = ("output_dir", "progress", "tracking", "description", "shard")


def resource_dir(name: str) -> Path:
    """Locate a top-level resource folder (suites, zoo) in an installed wheel or a clone."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_resources" / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    raise UserError(f"cannot find the '{name}' folder next to the segbench package ({package})")


def available_suites() -> dict[str, Path]:
    """Suite names mapped to their YAML files."""
    return {p.stem: p for p in sorted(resource_dir("suites").glob("*.yaml"))}


def resolve_suite(suite: str) -> Path:
    """Turn ``suite=NAME`` or ``suite=path/to/file.yaml`` into a file path."""
    if suite.endswith((".yaml", ".yml")) or os.sep in suite:
        path = Path(suite)
        if not path.is_file():
            raise UserError(f"suite file '{suite}' does not exist")
        return path
    suites = available_suites()
    if suite not in suites:
        raise unknown("suite", suite, suites)
    return suites[suite]


def valid_keys(schema: type = SuiteConfig, prefix: str = "") -> list[str]:
    """All dotted keys the schema accepts (leaves and sections)."""
    keys = []
    for f in dataclasses.fields(schema):
        key = prefix + f.name
        keys.append(key)
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            keys += valid_keys(f.default_factory, key + ".")
    return keys


_REPLACED = {"bench.compile": "bench.compile was replaced by bench.backends: use bench.backends=[compile] "
                                "(or [eager,compile] to time both)"}


def _check_key(key: str) -> None:
    """Raise a UserError for a dotted key the schema does not have (free-form dict fields accept any child)."""
    if key in _REPLACED:
        raise UserError(_REPLACED[key])
    schema: Any = SuiteConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(schema)}
        if part not in fields:
            valid = valid_keys()
            hints = closest(key, valid) or closest(part, [k.rsplit(".", 1)[-1] for k in valid])
            hint = f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
            raise UserError(f"unknown config key '{key}'{hint}")
        factory = fields[part].default_factory
        if dataclasses.is_dataclass(factory):
            schema = factory
            continue
        free_form = callable(factory) and isinstance(factory(), dict)
        if depth < len(parts) - 1 and not free_form:
            raise UserError(f"config key '{'.'.join(parts[: depth + 1])}' is a value, not a section: '{key}'")
        return


def _flatten(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        keys = []
        for k, v in node.items():
            keys += _flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
        return keys
    return [prefix.rstrip(".")] if prefix else []


def _check_sections(values: dict[str, Any], schema: Any = None, prefix: str = "") -> None:
    """Raise a UserError where a value is given for a whole section (``train=5`` instead of ``train.iters=5``)."""
    schema = schema or SuiteConfig
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in values.items():
        factory = fields[key].default_factory if key in fields else None
        if not dataclasses.is_dataclass(factory):
            continue
        if not isinstance(value, dict):
            example = dataclasses.fields(factory)[0].name
            raise UserError(f"config key '{prefix}{key}' is a section, not a value (got {value!r}); "
                            f"set one of its keys, e.g. {prefix}{key}.{example}=...")
        _check_sections(value, factory, f"{prefix}{key}.")


def parse_overrides(overrides: list[str]) -> tuple[str, dict[str, Any]]:
    """Split ``key=value`` strings into the suite name and a nested dict of the other values."""
    from omegaconf import OmegaConf

    suite = DEFAULT_SUITE
    rest: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"override '{item}' is not of the form key=value")
        if key.startswith(("+", "~")):
            raise UserError(f"override '{item}': adding or deleting keys is not supported; set an existing key")
        if key == "suite":
            suite = value
            continue
        _check_key(key)
        rest.append(item)
    try:
        values = OmegaConf.to_container(OmegaConf.from_dotlist(rest))
    except Exception as exc:  # omegaconf's grammar errors
        raise UserError(f"cannot parse overrides {rest}: {exc}".splitlines()[0]) from None
    _check_sections(values)
    return suite, values


def read_config(overrides: list[str] | None = None) -> SuiteConfig:
    """Read the suite named by ``suite=`` (the embedded default otherwise) and apply the overrides; every key and
    type is checked here, every name (models, losses, data sets) by ``segbench.pipeline.validation``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    suite, values = parse_overrides(list(overrides or []))
    path = resolve_suite(suite)
    try:
        file_values = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as exc:
        raise UserError(f"suite file '{path}' is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(file_values, dict):
        raise UserError(f"suite file '{path}' must hold a mapping of config keys")
    for key in _flatten(file_values):
        try:
            _check_key(key)
        except UserError as exc:
            raise UserError(f"{path.name}: {exc}") from None
    try:
        _check_sections(file_values)
    except UserError as exc:
        raise UserError(f"{path.name}: {exc}") from None
    file_values.setdefault("name", path.stem)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SuiteConfig), file_values, values)
        cfg: SuiteConfig = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        raise UserError(f"{key}: {exc.msg if hasattr(exc, 'msg') else exc}".splitlines()[0]) from None
    return cfg


def to_dict(cfg: SuiteConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_hash(cfg: SuiteConfig) -> str:
    """A short, stable hash of everything in ``cfg`` that changes the numbers."""
    values = {k: v for k, v in to_dict(cfg).items() if k not in UNHASHED}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]
