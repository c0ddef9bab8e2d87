"""results.json: its typed schema, the one writer (``write_results``) and the one reader (``read_results``).

Version 2 is written: version 1 plus ``kind``, with every field below present (null where it does not apply).
Version 1 files (segbench 0.1) are read and upgraded (``kind`` inferred). Fractions for quality, NaN as null.
Every record is a pydantic model (``segbench.config.typed.Record``): types and the sets of values (``Literal``) are
declared here once; ``schemas/results.schema.json`` is generated from them. Keys not listed here are kept
(``model_extra``) so that a newer file survives a read and a write. A file of
the wrong structure is a UserError naming the first offending field and what was expected there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
from pydantic import Field, ValidationError

from segbench.config.typed import ABSENT, Record, describe, error_line, errors, plain
from segbench.core.files import atomic_write
from segbench.errors import UserError
from segbench.results.passport import MetricDefinition, PassportDetails
from segbench.results.robustness import Robustness
from segbench.results.speed import BackendEvaluation, SkippedBackend, Speed
from segbench.results.tables import Tables

if TYPE_CHECKING:
    import pandas as pd

    from segbench.metrics.confusion import SegMetrics

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
Kind = Literal["run", "bench", "score"]  # segbench run / eval, segbench bench (bench.json), segbench score
KINDS = get_args(Kind)
RESULTS_NAME = "results.json"
# A finished model's headline metrics: a NaN (or null) in one of them needs the record's ``invalid_reason``.
HEADLINE_METRICS = ("mIoU", "mDice", "aAcc")


class Shard(Record):
    index: int  # this run's shard, from 0
    count: int  # shards of the sweep
    sweep: str  # the id every shard of one sweep shares


class Suite(Record):
    name: str  # the suite's name (suites/NAME.yaml, or the name inside a suite file)
    config_hash: str | None = None  # sha256 prefix of every setting that changes the numbers
    config: dict[str, Any] = {}  # the resolved suite configuration
    shard: Shard | None = None  # shard=I/N: which share of the suite's models this run holds


class Dataset(Record):
    name: str  # registry name of the data set
    classes: list[str]  # class names, in label order
    split: str | None = None  # the evaluated split


class Convention(Record):
    accumulation: str = "dataset"  # confusion matrix summed over the whole split, then scored
    absent_class: str = "nan_excluded"  # a class absent from ground truth and prediction: NaN, out of the mean
    ignore_index: int = 255  # label value whose pixels are dropped
    label_space: str | None = None  # which label space the classes come from, e.g. cityscapes-19
    num_classes: int | None = None  # number of evaluated classes
    void_prediction: str | None = None  # score only: how a prediction outside the classes counts


class Environment(Record):
    segbench: str | None = None  # segbench version
    git_commit: str | None = None  # commit of the segbench source tree, null outside a clone
    python: str | None = None  # Python version
    platform: str | None = None  # platform.platform()
    packages: dict[str, str | None] = {}  # versions of torch, timm, smp, mlflow, ...
    device: str | None = None  # torch device, e.g. cpu or cuda:0
    device_name: str | None = None  # GPU name, or the CPU model on the CPU: the hardware speeds belong to
    cpu: str | None = None  # CPU model
    threads: int | None = None  # torch intra-op threads
    cuda: str | None = None  # CUDA version torch was built with
    cudnn: int | None = None  # cuDNN version
    world_size: int | None = None  # processes of the job (torchrun), 1 otherwise
    cudnn_benchmark: bool | None = None  # torch.backends.cudnn.benchmark when the run started
    gpu_driver: str | None = None  # NVIDIA driver version (nvidia-smi or pynvml); null without a CUDA device
    gpu_clocks: dict[str, Any] | None = None  # current and max SM/memory clocks (MHz), power limit, pstate, ...


class Mlflow(Record):
    tracking_uri: str | None = None  # the store the run was logged to (null when tracking was off)
    experiment_id: str | None = None  # its experiment
    parent_run_id: str | None = None  # the invocation's parent run, which holds this file as an artifact


class Training(Record):
    iters: int  # optimiser steps
    seconds: float  # wall time of training
    final_loss: float | None = None  # loss of the last logged step
    losses: list[float] | None = None  # the loss of every step (MLflow's train_loss series, live and replayed)
    data_wait_share: float | None = None  # share of the training time spent waiting for data
    batch_size: int | None = None  # the global batch (split across the ranks of a torchrun job)
    world_size: int | None = None  # processes that trained (torchrun), 1 otherwise
    precision: Literal["fp32", "bf16", "fp16"] | None = None  # autocast dtype of training (fp16: gradient scaler)
    channels_last: bool | None = None  # trained in channels-last memory format
    val_curve: list[list[float]] | None = None  # train.eval_every: [iteration, mIoU] at each validation
    val_images: int | None = None  # images each validation scored (train.eval_samples, or the whole split)
    keep: Literal["last", "best"] | None = None  # which weights the final evaluation used
    best_iter: int | None = None  # keep=best: the iteration of the kept weights
    resumed_at: list[int] | None = None  # iterations training continued from after an interruption (resume=)


class Checkpoint(Record):
    path: str  # folder of the saved weights, relative to the output folder
    sha256: str  # of the weights file


class WeightsFile(Record):
    file: str  # the weights file that was loaded
    sha256: str | None = None  # of that file (null in version-1 files)
    loaded: int | None = None  # backbone weights: tensors of the backbone they filled
    total: int | None = None  # backbone weights: tensors the backbone has
    coverage: float | None = None  # backbone weights: loaded / total


class Weights(Record):
    model: WeightsFile | None = None  # a checkpoint of the whole model (weights.MODEL); null: none loaded
    backbone: WeightsFile | None = None  # backbone weights (backbone_weights.BACKBONE); null: random


class Origin(Record):
    source: str  # segbench (built here on timm), torchvision, hf or smp
    weights: dict[str, Any] = {}  # where the weights come from (kind, path, url, ...)
    normalisation: dict[str, Any] = {}  # mean, std, input scale the model expects
    label_mapping: dict[str, Any] = {}  # how the model's classes map to the suite's
    notes: list[str] = []  # what the user was told (e.g. classes assumed)
    plugin: dict[str, Any] | None = None  # a user's registered model: module, file, sha256, package, version, builder


class ClassScores(Record):
    name: str = Field(alias="class")  # class name (JSON key "class")
    IoU: float | None = None  # intersection over union; null when the class is absent
    Dice: float | None = None  # 2 TP / (2 TP + FP + FN)
    Acc: float | None = None  # per-class recall TP / (TP + FN)
    support: int | None = None  # ground-truth pixels of the class


class Evaluation(Record):
    mode: Literal["whole", "slide", "resize", "predictions"] | None = None  # predictions: segbench score
    split: str | None = None  # evaluated split
    images: int | None = None  # evaluated images
    seconds: float | None = None  # wall time of the evaluation
    images_per_second: float | None = None  # end to end, data loading included
    forward_images_per_second: float | None = None  # forward passes only
    forward_share: float | None = None  # share of the wall time spent in the forward pass
    data_wait_share: float | None = None  # share of the wall time spent waiting for data
    world_size: int | None = None  # processes that evaluated a contiguous shard each (torchrun), 1 otherwise
    images_per_second_per_rank: list[float] | None = None  # each rank's own end-to-end throughput
    window: list[int] | None = None  # slide mode: window height, width
    stride: list[int] | None = None  # slide mode: stride height, width
    resize: list[int] | None = None  # resize mode: the size images are resized to
    scales: list[float] | None = None  # test-time scales
    flip: bool | None = None  # test-time horizontal flip
    merge: Literal["logits", "mean_softmax"] | None = None  # how several views are merged
    crf: bool | None = None  # CRF post-processing
    pred_dir: str | None = None  # score only: the folder of prediction PNGs
    label_space: str | None = None  # score only: train or dataset ids in the PNGs
    label_space_detected: bool | None = None  # score only: label space detected rather than named
    void_pixels: int | None = None  # score only: pixels predicted outside the classes
    skipped: int | None = None  # score only: unreadable ground-truth files skipped
    backends: list[BackendEvaluation] | None = None  # eval.backends: each backend's metrics and difference
    precision: Literal["fp32", "bf16", "fp16"] | None = None  # autocast dtype of the forward pass
    channels_last: bool | None = None  # evaluated in channels-last memory format


class DataIssues(Record):
    skipped: int = 0  # unreadable samples skipped (data.skip_bad)
    problems: list[str] = []  # the first problems found
    classes_without_pixels: list[str] = []  # classes with no pixel in the evaluated split


class PerImage(Record):
    intersection: list[list[int]]  # images x classes intersections (TP), for bootstrap intervals
    union: list[list[int]]  # images x classes unions (TP + FP + FN)


class ModelRecord(Record):
    name: str  # ARCH-BACKBONE or SOURCE:NAME; for segbench score, the predictions folder's name
    arch: str | None = None  # architecture registry name
    backbone: str | None = None  # timm backbone
    params: int | None = None  # parameters
    weights: Weights | None = None  # the weights loaded before training or evaluation; null: random
    origin: Origin | None = None  # the model's source, normalisation and label mapping (version 2)
    source: str | None = None  # "predictions" for segbench score
    train: Training | None = None  # null when not trained
    checkpoint: Checkpoint | None = None  # the weights saved after training
    metrics: dict[str, float | None] = {}  # mIoU, mDice, aAcc, mAcc, fwIoU (fractions)
    per_class: list[ClassScores] = []  # one entry per class
    categories: dict[str, Any] | None = None  # category IoU where the data set groups its classes
    evaluation: Evaluation | None = None  # how it was evaluated
    confusion_matrix: list[list[int]] | None = None  # rows ground truth, columns prediction (score: + void)
    data: DataIssues | None = None  # problems met in the data
    per_image: PerImage | None = None  # per-image intersections and unions
    passport: PassportDetails | None = None  # metric-passport details (boundary, calibration, iIoU, per case)
    robustness: Robustness | None = None  # eval.corruptions: scores under corruption, mPC, rPC; ACDC: per condition
    speed: list[Speed] = []  # one record per bench backend and batch size
    speed_skipped: list[SkippedBackend] = []  # bench backends that could not run here
    mlflow_run_id: str | None = None  # the model's MLflow child run
    # why a headline metric (mIoU, mDice, aAcc) is not a number: training diverged, non-finite logits, ...; null: the
    # metrics are valid. The writer refuses a NaN headline metric without it.
    invalid_reason: str | None = None

    def set_scores(self, classes: Sequence[str], scores: SegMetrics, matrix: np.ndarray, intersection: np.ndarray,
                   union: np.ndarray, categories: tuple[tuple[str, tuple[int, ...]], ...] = (),
                   passport_metrics: dict[str, float] | None = None, passport: dict | None = None) -> None:
        """The scores of one evaluated split, the same for ``run`` and ``score``: summary metrics (then the
        passport's headline metrics), per-class scores, the confusion matrix (ground truth in K rows; ``score`` adds
        a void column), per-image intersections and unions, category IoU and their mean where the data set groups
        its classes, and the passport's record."""
        from segbench.metrics.confusion import category_iou, nanmean

        self.metrics = plain(scores.summary() | (passport_metrics or {}), nan_as_null=False)
        self.per_class = class_scores(classes, scores)
        self.confusion_matrix = matrix.tolist()
        self.per_image = PerImage(intersection=intersection.tolist(), union=union.tolist())
        if categories:
            iou = category_iou(matrix, categories)
            self.categories = {"IoU": iou, "mIoU": float(nanmean(np.array(list(iou.values()))))}
        self.passport = plain(passport, nan_as_null=False)

    @property
    def first_speed(self) -> Speed | None:
        """The speed record of the first batch size, None when speed was not measured."""
        return self.speed[0] if self.speed else None


class Results(Record, Tables):
    schema_version: int  # 2 written; 1 read
    kind: Kind
    suite: Suite  # what was run
    dataset: Dataset | None = None  # the evaluated data set; null for bench
    convention: Convention | None = None  # the metric convention; null for bench
    environment: Environment | None = None  # the hardware and software fingerprint
    mlflow: Mlflow | None = None  # where the run was logged
    models: list[ModelRecord] = []  # one record per model
    metric_definitions: dict[str, MetricDefinition] = {}  # every metric in ``metrics``

    def to_dict(self) -> dict:
        """Plain JSON data, version 2: every field, NaN as null, unknown keys last."""
        return plain(self)


def class_scores(classes: Sequence[str], scores: SegMetrics) -> list[ClassScores]:
    """One record per class: IoU, Dice, accuracy (NaN for a class absent from ground truth and prediction) and
    ground-truth pixels."""
    return [ClassScores(name=name, IoU=float(iou), Dice=float(dice), Acc=float(acc), support=int(support))
            for name, iou, dice, acc, support in zip(classes, scores.iou, scores.dice, scores.acc, scores.support)]


def per_class_frame(rows: list[ClassScores]) -> pd.DataFrame:
    """A model's per-class records as the table of its ``per_class_MODEL.csv``: class, IoU, Dice, Acc (NaN for a
    class absent from ground truth and prediction), support."""
    import pandas as pd

    frame = pd.DataFrame([{"class": row.name, "IoU": row.IoU, "Dice": row.Dice, "Acc": row.Acc,
                           "support": row.support} for row in rows], columns=["class", "IoU", "Dice", "Acc", "support"])
    return frame.astype({"IoU": float, "Dice": float, "Acc": float})


# ---------------------------------------------------------------- reading and writing


def infer_kind(data: dict) -> str:
    """What wrote a version-1 dict: bench (no data set), score (predictions) or run."""
    if "dataset" not in data:
        return "bench"
    models = data.get("models") if isinstance(data.get("models"), list) else []
    return "score" if any(isinstance(m, dict) and m.get("source") == "predictions" for m in models) else "run"


def parse_results(data: Any, source: str = "results") -> Results:
    """Typed results from JSON data of version 1 or 2; a UserError names ``source`` and the offending field."""
    if not isinstance(data, dict) or "suite" not in data or "models" not in data:
        raise UserError(f"{source} is not a segbench results.json (no 'suite' and 'models')")
    version = data.get("schema_version", ABSENT)
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise UserError(f"{source}: schema_version: expected {' or '.join(map(str, READABLE_VERSIONS))}, "
                        f"got {describe(version)}")
    if version == 1:
        data = {**data, "kind": infer_kind(data), "models": [_upgrade_model(m) for m in data["models"]]}
    results = _typed(Results, data, source)
    for i, record in enumerate(results.models):
        pairs = record.per_image
        if pairs and np.shape(pairs.intersection) != np.shape(pairs.union):
            raise UserError(f"{source}: models[{i}].per_image: expected intersection and union of the same shape, "
                            f"got {np.shape(pairs.intersection)} and {np.shape(pairs.union)}")
    results.schema_version = SCHEMA_VERSION
    return results


def _typed(cls: type[Record], data: Any, source: str) -> Any:
    """``data`` (numpy values and tuples allowed, NaN kept) as a ``cls``; a UserError names the field."""
    try:
        return cls.model_validate(plain(data, nan_as_null=False))
    except ValidationError as exc:
        raise UserError(f"{source}: {error_line(errors(exc)[0], cls)}") from None


def _upgrade_model(record: Any) -> Any:
    """A version-1 model record with its weights (a file name or null) as a version-2 weights object."""
    if isinstance(record, dict) and isinstance(record.get("weights"), str):
        return {**record, "weights": {"model": {"file": record["weights"]}}}
    return record


def read_results(path: Path | str) -> Results:
    """Read a results.json (or the one in a folder) of version 1 or 2; anything wrong with it is a UserError."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_NAME
    if not path.is_file():
        raise UserError(f"no results file at {path}")
    return parse_results(_read_json(path), str(path))


def _read_json(path: Path) -> Any:
    """The JSON data of ``path``; a UserError if it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from None


def write_results(path: Path | str, results: Results, compact: bool = False) -> Path:
    """Write ``results`` as version-2 JSON, atomically; ``compact`` puts innermost arrays on one line. A finished
    model whose headline metric is NaN without an ``invalid_reason`` is refused."""
    check_headlines(results)
    plain_data = results.to_dict()
    return atomic_write(path, (_compact(plain_data) if compact else json.dumps(plain_data, indent=2, allow_nan=False))
                        + "\n")


def read_model(path: Path | str) -> ModelRecord:
    """One model's record as a JSON file of its own (a resumed run's finished models); a UserError if it is not."""
    return _typed(ModelRecord, _read_json(Path(path)), str(path))


def check_headlines(results: Results, source: str = "results to write") -> None:
    """Refuse a model record whose headline metric (``HEADLINE_METRICS``) is NaN or null without a reason."""
    for i, record in enumerate(results.models):
        for name in HEADLINE_METRICS:
            value = record.metrics.get(name, 0.0)
            if (value is None or not math.isfinite(value)) and not record.invalid_reason:
                raise UserError(f"{source}: models[{i}].metrics.{name}: expected a finite number for the finished "
                                f"model '{record.name}', got {describe(value)}; a record whose metrics are not valid "
                                "says why in invalid_reason")


def _compact(value: Any, level: int = 0) -> str:
    """JSON with objects indented and every innermost array on one line: small and diffable (baselines)."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict) and value:
        items = ",\n".join(f"{inner}{json.dumps(key)}: {_compact(item, level + 1)}" for key, item in value.items())
        return "{\n" + items + "\n" + pad + "}"
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        return "[\n" + ",\n".join(inner + _compact(item, level + 1) for item in value) + "\n" + pad + "]"
    return json.dumps(value, allow_nan=False)
