"""Suite configuration: every value declared once with its type and range (pydantic dataclasses), YAML files in
suites/ and Hydra-style ``key=value`` overrides (OmegaConf).

A leaf of the package: it imports no other segbench module but ``errors`` and ``config.typed``. Names are checked
against the registries in ``segbench.pipeline.validation``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from segbench.config.typed import (
    Expect,
    Fraction,
    NonNegativeFloat,
    PositiveFloat,
    Relation,
    error_line,
    errors,
    finite,
    integer,
    pair,
)
from segbench.errors import UserError, closest, unknown

DEFAULT_SUITE = "synthetic"
Optimizer, Precision = Literal["sgd", "adamw", "adam"], Literal["fp32", "bf16", "fp16"]  # precision: autocast dtype
OPTIMIZERS = get_args(Optimizer)
# Every section rejects keys it does not declare; a number given for a string keeps its text (output_dir=2024).
SECTION = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

Name = Annotated[str, Field(min_length=1), Expect("a non-empty string")]
_Side = integer(gt=0, le=65536)
HeightWidth = pair(_Side, "[height, width] of positive integers")
WidthHeight = pair(_Side, "[width, height] of positive integers")
Label = integer(ge=0, le=255)  # an 8-bit mask value or a class index
Seconds = finite(ge=0, le=86400)  # a timing budget: at most a day
Std, Weight = finite(gt=0, le=1e4), finite(ge=0, le=1e4)  # CRF kernel widths (pixels, colour levels) and weights
# Marks a list with one entry per class of the suite's data set (checked once the data set is known).
PER_CLASS = Expect("one number per class")


@dataclass(config=SECTION)
class DataConfig:
    name: Name = "synthetic"
    root: str | None = None  # on-disk data sets; suites may use ${oc.env:VAR,null}
    train_split: Name = "train"
    val_split: Name = "val"
    ignore_index: integer(ge=0, le=65535) = 255
    num_workers: integer(ge=0, le=1024) = 0
    skip_bad: bool = False  # skip (and count) bad samples instead of refusing to start
    label_map: dict[Label, Label] = field(default_factory=dict)  # raw mask value -> class index (e.g. {255: 1})
    # synthetic data set
    image_size: integer(gt=0, le=8192) = 64
    train_samples: integer(gt=0, le=10**8) = 4096
    val_samples: integer(gt=0, le=10**8) = 256
    # folder data set: class names (and optional colours), label 0 ignored if reduce_zero_label
    classes: Annotated[list[Name], Field(min_length=1)] | None = None
    palette: list[Annotated[list[Label], Field(min_length=3, max_length=3), Expect("[r, g, b] of 0..255")]] | None \
        = None
    reduce_zero_label: bool = False
    # training transforms (image and mask together)
    base_size: WidthHeight | None = None  # (width, height) the scale range refers to, as MMSegmentation
    scale_range: pair(finite(gt=0, le=16), "[low, high] of two positive factors") = field(
        default_factory=lambda: [1.0, 1.0])
    crop_size: HeightWidth | None = None  # (height, width)
    flip: bool = False
    photometric: bool = False
    spacing: pair(PositiveFloat, "[row, column] pixel sizes > 0") | None = None  # physical pixel size: HD95, NSD units

    @model_validator(mode="after")
    def _relations(self) -> DataConfig:
        if self.scale_range[0] > self.scale_range[1]:
            raise Relation("scale_range", "[low, high] with low <= high", self.scale_range[0])
        return self


@dataclass(config=SECTION)
class TrainConfig:
    enabled: bool = True
    iters: integer(gt=0, le=10**9) = 300
    batch_size: integer(gt=0, le=65536) = 16
    optimizer: Optimizer = "adamw"
    lr: finite(gt=0, le=100) = 1e-3
    momentum: Fraction = 0.9
    weight_decay: finite(ge=0, le=1) = 1e-4
    poly_power: finite(ge=0, le=100) = 0.9
    min_lr: NonNegativeFloat = 0.0
    loss: dict[Name, NonNegativeFloat] = field(default_factory=lambda: {"ce": 1.0})  # loss term -> its weight
    class_weights: Annotated[list[NonNegativeFloat], PER_CLASS] | None = None
    save_checkpoint: bool = True  # safetensors weights and their config in the output folder
    sync_bn: bool = False  # under torchrun: batch-norm statistics over the global batch (SyncBatchNorm)
    precision: Precision = "fp32"  # autocast dtype of the forward pass; fp16 adds a gradient scaler
    channels_last: bool = False  # the model's weights and the images in channels-last memory format
    checkpoint_every: integer(ge=0, le=10**9) = 0  # write the training state every N iterations (0: on a signal only)
    eval_every: integer(ge=0, le=10**9) = 0  # validate every N iterations: an mIoU curve (0: never)
    eval_samples: integer(gt=0, le=10**8) | None = None  # validate on the first N images of the split (all: null)
    keep: Literal["last", "best"] = "last"  # the weights the final evaluation uses: the last, or the best validated

    @model_validator(mode="after")
    def _relations(self) -> TrainConfig:
        if self.keep == "best" and not self.eval_every:  # nothing validated to choose the best from
            raise Relation("keep", "train.keep=best together with train.eval_every=N (N > 0)", self.keep)
        if self.min_lr > self.lr:
            raise Relation("min_lr", f"at most train.lr ({self.lr:g})", self.min_lr)
        return self


@dataclass(config=SECTION)
class CRFConfig:
    """Fully connected CRF post-processing (DeepLab v1 defaults)."""

    enabled: bool = False
    iters: integer(ge=0, le=1000) = 10  # 0: the model's probabilities unchanged
    pos_xy_std: Std = 3.0
    pos_weight: Weight = 3.0
    bi_xy_std: Std = 80.0
    bi_rgb_std: Std = 13.0
    bi_weight: Weight = 4.0


@dataclass(config=SECTION)
class EvalConfig:
    batch_size: integer(gt=0, le=65536) = 16
    mode: Literal["whole", "slide", "resize"] = "whole"
    window: HeightWidth | None = None  # slide: (height, width)
    stride: HeightWidth | None = None  # slide: (height, width)
    resize: WidthHeight | None = None  # resize: (width, height) to fit the image in, keeping its ratio
    # multi-scale test-time augmentation
    scales: Annotated[list[finite(gt=0, le=16)], Field(min_length=1)] = field(default_factory=lambda: [1.0])
    flip: bool = False  # horizontal-flip test-time augmentation
    crf: CRFConfig = field(default_factory=CRFConfig)
    metrics: Annotated[list[Name], Field(min_length=1)] = field(
        default_factory=lambda: ["mIoU", "mDice", "aAcc"])  # shown in the leaderboard
    # published models' classes -> the suite's: MODEL_CLASS: SUITE_CLASS, or NAME: null for a class not shared
    class_map: dict[str, str | None] = field(default_factory=dict)
    # the metric passport (segbench list metrics), computed in the same pass; false: the confusion matrix only
    passport: bool = True
    boundary_dilation: finite(gt=0, lt=1) = 0.02  # Boundary IoU band width, as a share of the image diagonal
    calibration_bins: integer(gt=0, le=10000) = 15  # ECE bins
    foreground_classes: list[Label] | None = None  # headline fgIoU/fgDice and per-case table; default [1] if 2 classes
    surface: bool | None = None  # HD95 and NSD per case (CPU); default: on for 2-class suites
    surface_tolerance: finite(ge=0, le=1e6) = 1.0  # NSD tolerance in pixels, or in data.spacing units
    save_predictions: bool = False  # label PNGs in the data set's own ids, and colour overlays
    overlays: integer(ge=0, le=100000) = 4  # overlays per model when saving predictions
    # deployment parity: each backend evaluated on the split, its metrics and difference from eager recorded
    backends: list[Name] = field(default_factory=lambda: ["eager"])
    # robustness: also evaluate under these corruptions (names, groups noise/blur/weather/digital, or all) at these
    # severities; see docs/robustness.md
    corruptions: list[Name] = field(default_factory=list)
    severities: Annotated[list[integer(ge=1, le=5)], Field(min_length=1)] = field(
        default_factory=lambda: [1, 2, 3, 4, 5])
    precision: Precision = "fp32"  # autocast dtype of the forward pass
    channels_last: bool = False  # the model's weights and the images in channels-last memory format


@dataclass(config=SECTION)
class BenchConfig:
    enabled: bool = True
    batch_sizes: Annotated[list[integer(gt=0, le=65536)], Field(min_length=1)] = field(default_factory=lambda: [1])
    input_size: HeightWidth | None = None  # (height, width); default: the data set's evaluation size
    precision: Precision = "fp32"  # autocast
    channels_last: bool = False
    backends: list[Name] = field(default_factory=lambda: ["eager"])  # eager, compile, onnxruntime, tensorrt
    isolate: bool = True  # segbench bench: time each model in a fresh process
    min_seconds: Seconds = 0.0  # keep timing blocks of iters until at least this much time is timed
    oom: Literal["fail", "halve"] = "fail"  # fail (one line naming the batch size) | halve (halve it, recorded)
    warmup: integer(ge=0, le=10**6) = 5
    warmup_seconds: Seconds = 0.0
    iters: integer(gt=0, le=10**6) = 20
    repeats: integer(gt=0, le=1000) = 3


@dataclass(config=SECTION)
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None


@dataclass(config=SECTION)
class SuiteConfig:
    name: Name = DEFAULT_SUITE
    description: str = ""
    models: list[Name] = field(default_factory=list)
    weights: dict[str, str] = field(default_factory=dict)  # model name -> local checkpoint (file or folder)
    backbone_weights: dict[str, str] = field(default_factory=dict)  # timm backbone -> local weights file, or timm
    backbone_key_map: dict[str, dict[str, str]] = field(default_factory=dict)  # backbone -> {regex: replacement}
    # model or backbone -> the input normalisation its weights were trained with: imagenet, timm, or
    # {mean: [R, G, B], std: [R, G, B], input_range: [LOW, HIGH]} (see segbench.models.normalisation)
    normalisation: dict[str, Any] = field(default_factory=dict)
    accept_uninitialised: list[str] = field(default_factory=list)  # models whose weights may leave tensors random
    seed: integer(ge=0, le=2**32 - 1) = 0  # numpy's seed range
    device: Annotated[str, Field(pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"),
                      Expect("auto, cpu, cuda, cuda:N or mps")] = "auto"
    output_dir: str | None = None
    shard: str | None = None  # I/N: run shard I (from 0) of N of the suite's models; auto: from the job array
    resume: str | None = None  # RUN_DIR (an interrupted run's .partial folder) or auto: continue that run
    progress: bool = True
    imports: list[Name] = field(default_factory=list)  # Python modules to import first (user plugins)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


SUITE = TypeAdapter(SuiteConfig)


# Keys that do not change the numbers a suite produces; left out of its hash.
UNHASHED = ("output_dir", "progress", "tracking", "description", "shard", "resume")
UNHASHED_IN = {"train": ("checkpoint_every",)}  # section keys that change no number either
# Keys added after suites were hashed: left out while empty, so that a suite's hash stays what it was.
HASHED_WHEN_SET = ("imports", "normalisation", "accept_uninitialised")
# Section keys added after suites were hashed: left out at their default, so that a suite's hash stays what it was.
HASHED_WHEN_CHANGED = {"train": {"precision": "fp32", "channels_last": False, "eval_every": 0, "eval_samples": None,
                                 "keep": "last"},
                       "eval": {"precision": "fp32", "channels_last": False}}


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


def _unknown_key(key: str) -> UserError:
    valid = valid_keys()
    hints = closest(key, valid) or closest(key.rsplit(".", 1)[-1], [k.rsplit(".", 1)[-1] for k in valid])
    hint = f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
    return UserError(f"unknown config key '{key}'{hint}")


def _problem(exc: ValidationError, schema: Any) -> str:
    """The first error of a suite's values in one line, the way a user wrote them (dotted keys)."""
    first = sorted(errors(exc), key=lambda e: e["type"] != "unexpected_keyword_argument")[0]
    loc = tuple(str(part) for part in first["loc"] if part != "[key]")
    key, value = ".".join(loc), first.get("input")
    if first["type"] == "unexpected_keyword_argument":
        while isinstance(value, dict) and value:  # the first key the user wrote below it: 'trian.iters'
            child = next(iter(value))
            key, value = f"{key}.{child}", value[child]
        return str(_REPLACED.get(key) or _unknown_key(key))
    hint = _section_at(schema, loc)
    if first["type"] == "dataclass_type" and hint is not None:
        example = dataclasses.fields(hint)[0].name
        return (f"config key '{key}' is a section, not a value (got {value!r}); set one of its keys, e.g. "
                f"{key}.{example}=...")
    if isinstance(value, dict) and value and hint is None and first["type"] not in ("dict_type", "value_error"):
        return f"config key '{key}' is a value, not a section: '{key}.{next(iter(value))}'"
    return error_line(first, schema)


def _section_at(schema: Any, loc: tuple[str, ...]) -> Any:
    """The section (a config dataclass) at ``loc``, or None where ``loc`` names a value."""
    for part in loc:
        fields = {f.name: f for f in dataclasses.fields(schema)}
        factory = fields[part].default_factory if part in fields else None
        if not dataclasses.is_dataclass(factory):
            return None
        schema = factory
    return schema


def from_dict(values: Any, schema: Any = SuiteConfig, where: str = "") -> Any:
    """``values`` (plain data: a suite, or one of its sections) as a checked config object; a UserError names the
    key and what it expects, after ``where``."""
    try:
        return (SUITE if schema is SuiteConfig else TypeAdapter(schema)).validate_python(values)
    except ValidationError as exc:
        raise UserError(f"{where}{_problem(exc, schema)}") from None


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
        if key in _REPLACED:
            raise UserError(_REPLACED[key])
        if key == "suite":
            suite = value
            continue
        rest.append(item)
    values: dict[str, Any] = {}
    for item in rest:  # one by one: a later override of a key replaces an earlier one, whatever their types
        try:
            values = _merged(values, OmegaConf.to_container(OmegaConf.from_dotlist([item])))
        except Exception as exc:  # omegaconf's grammar errors
            raise UserError(f"cannot parse override '{item}': {exc}".splitlines()[0]) from None
    return suite, values


def read_config(overrides: list[str] | None = None) -> SuiteConfig:
    """Read the suite named by ``suite=`` (the embedded default otherwise) and apply the overrides; every key, type
    and range is checked here (declared on the fields above), every name by ``segbench.pipeline.validation``."""
    from omegaconf import OmegaConf

    suite, values = parse_overrides(list(overrides or []))
    path = resolve_suite(suite)
    try:
        file_config = OmegaConf.load(path)
    except Exception as exc:
        raise UserError(f"suite file '{path}' is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not OmegaConf.is_dict(file_config):
        raise UserError(f"suite file '{path}' must hold a mapping of config keys")
    file_config.setdefault("name", path.stem)
    file_values = _resolved(file_config, f"{path.name}: ")
    from_dict(file_values, where=f"{path.name}: ")  # the file's own mistakes name the file
    return from_dict(_merged(file_values, _resolved(OmegaConf.create(values), "")))


def _merged(base: Any, override: Any) -> Any:
    """``override`` over ``base``: mappings key by key, anything else replaced (a list, or a value for a section,
    which the types then refuse with its key)."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    return {**base, **{key: _merged(base.get(key), value) for key, value in override.items()}}


def _resolved(config: Any, where: str) -> Any:
    """Plain data with the interpolations (``${oc.env:VAR,null}``) resolved."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(config, resolve=True)
    except Exception as exc:  # an interpolation that cannot be resolved
        raise UserError(f"{where}cannot resolve {str(exc).splitlines()[0]}") from None


def to_dict(cfg: SuiteConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def hashed_values(cfg: SuiteConfig) -> dict[str, Any]:
    """Everything in ``cfg`` that changes the numbers (what ``config_hash`` hashes)."""
    values = {k: v for k, v in to_dict(cfg).items() if k not in UNHASHED and (k not in HASHED_WHEN_SET or v)}
    if not values["eval"].get("corruptions"):  # a clean evaluation: the corruption settings change no number
        values["eval"] = {k: v for k, v in values["eval"].items() if k not in ("corruptions", "severities")}
    for section, defaults in HASHED_WHEN_CHANGED.items():
        values[section] = {k: v for k, v in values[section].items()
                           if k not in UNHASHED_IN.get(section, ()) and (k not in defaults or v != defaults[k])}
    return values


def config_hash(cfg: SuiteConfig) -> str:
    """A short, stable hash of everything in ``cfg`` that changes the numbers."""
    return hashlib.sha256(json.dumps(hashed_values(cfg), sort_keys=True).encode()).hexdigest()[:12]
