"""What a run logs to MLflow, computed from its results.json records: the same for a live run and for
``segbench log``, which sends a finished run's results later (the store was down, or to another store)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from segbench.config.schema import TrackingConfig
from segbench.core.files import flatten
from segbench.core.names import safe_name
from segbench.errors import UserError
from segbench.metrics.confusion import REGISTRY
from segbench.results.robustness import robustness_metrics
from segbench.results.schema import (
    RESULTS_NAME,
    Environment,
    Evaluation,
    Mlflow,
    ModelRecord,
    Results,
    Shard,
    Training,
    Weights,
    check_headlines,
    read_results,
    write_results,
)
from segbench.results.speed import BackendEvaluation, Speed
from segbench.results.tracking import Tracker, check_store, tracking_uri

WHOLE = ("loss", "label_map", "backbone_key_map")  # logged as one param each: their keys are not param names


def per_class_csv(model: str) -> str:
    """The file name of a model's per-class table in its run's folder."""
    return f"per_class_{safe_name(model)}.csv"


def parent_params(config: dict) -> dict[str, Any]:
    """The parent run's params: the suite's configuration, flattened."""
    return flatten(config, keep=WHOLE)


def parent_tags(kind: str, suite: str, suite_hash: str, env: Environment | None,
                shard: Shard | None) -> dict[str, str]:
    """The parent run's tags: what ran, of which suite, where."""
    env = env or Environment()
    tags = {"segbench.kind": kind, "segbench.version": env.segbench, "segbench.suite": suite,
            "segbench.suite_hash": suite_hash, "segbench.device": env.device,
            "segbench.hardware": env.device_name,
            "mlflow.source.git.commit": env.git_commit or "unknown"}
    if shard is not None:
        tags |= {"segbench.sweep": shard.sweep, "segbench.shard": f"{shard.index}/{shard.count}"}
    return {k: str(v) for k, v in tags.items()}


def weights_params(weights: Weights | None) -> dict[str, object]:
    """MLflow params naming the weights a model started from ("random" when none were loaded)."""
    params: dict[str, object] = {}
    for part, key in (("model", "weights"), ("backbone", "backbone_weights")):
        loaded = getattr(weights, part) if weights is not None else None
        params[key] = loaded.file if loaded else "random"
        if loaded:
            params[f"{key}_sha256"] = loaded.sha256
        if loaded and loaded.coverage is not None:
            params[f"{key}_coverage"] = f"{loaded.loaded}/{loaded.total}"
    return params


def speed_metrics(speed: list[Speed]) -> dict[str, float]:
    """MLflow metrics for the speed records: per backend (eager unnamed, others as ``.BACKEND``), the first batch
    size unqualified, every one with its size (``images_per_second.onnxruntime.bs4``)."""
    out: dict[str, float] = {}
    for record in speed:
        backend = record.backend or "eager"
        tag = "" if backend == "eager" else f".{backend}"
        suffixes = ([] if f"images_per_second{tag}" in out else [tag]) + [f"{tag}.bs{record.requested_batch_size}"]
        for suffix in suffixes:
            out[f"images_per_second{suffix}"] = record.images_per_second
            out[f"latency_ms_p50{suffix}"] = record.latency_ms_p50
    return out


def parity_metrics(entries: list[BackendEvaluation]) -> dict[str, float]:
    """MLflow metrics: each evaluated backend's mIoU and its difference from eager (``mIoU.onnxruntime``,
    ``mIoU_diff.onnxruntime``)."""
    out = {}
    for entry in entries:
        if entry.status != "ok":
            continue
        for values, prefix in ((entry.metrics, ""), (entry.difference, "_diff")):
            out.update({f"{metric}{prefix}.{entry.backend}": value for metric, value in values.items()
                        if value is not None})
    return out


def model_metrics(record: ModelRecord) -> dict[str, float]:
    """The MLflow metrics of a model record: summary, per-class and category IoU, evaluation, backend parity, speed
    and robustness figures. The one place that names them: a live run, ``segbench score`` and ``segbench log`` of
    the same results.json log the same names and values."""
    logged = dict(record.metrics)
    logged.update({f"IoU.{row.name}": row.IoU for row in record.per_class})
    categories = record.categories or {}
    logged.update({f"IoU.category.{k}": v for k, v in categories.get("IoU", {}).items()})
    if categories.get("mIoU") is not None:
        logged["mIoU_category"] = categories["mIoU"]
    evaluation = record.evaluation or Evaluation()
    logged |= {"eval_images_per_second": evaluation.images_per_second,
               "eval_forward_share": evaluation.forward_share, "eval_data_wait_share": evaluation.data_wait_share}
    if record.data:
        logged["data_skipped"] = record.data.skipped
    if record.train:
        logged["train_seconds"] = record.train.seconds
    logged.update(speed_metrics(record.speed))
    logged.update(robustness_metrics(record.robustness))
    logged.update(parity_metrics(evaluation.backends or []))
    return {k: v for k, v in logged.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}  # NaN: not measured


def model_series(train: Training | None) -> dict[str, list[float] | dict[int, float]]:
    """The MLflow metric series of a model's training record: the loss of every step, and the validation mIoU at
    the iterations ``train.eval_every`` scored (live and replayed alike)."""
    series: dict[str, list[float] | dict[int, float]] = {}
    if train is not None and train.losses:
        series["train_loss"] = list(train.losses)
    if train is not None and train.val_curve:
        series["val_mIoU"] = {int(i): v for i, v in train.val_curve}
    return series


def model_params(record: ModelRecord) -> dict[str, object]:
    """The params of a model's child run."""
    source = record.origin.source if record.origin else record.source
    params = {"model": record.name, "source": source, "arch": record.arch, "backbone": record.backbone,
              "params": record.params}
    return params | weights_params(record.weights) if record.weights else params


def _existing(tracker: Tracker, run_id: str | None) -> tuple[str | None, set[str], str | None]:
    """``run_id``, the params it has and its status if the store holds it (not deleted), else None."""
    if run_id is None:
        return None, set(), None
    from mlflow.exceptions import MlflowException

    try:
        run = tracker.client.get_run(run_id)
    except MlflowException:
        return None, set(), None
    if run.info.lifecycle_stage != "active":
        return None, set(), None
    return run_id, set(run.data.params), run.info.status


def _new(params: dict[str, Any], logged: set[str]) -> dict[str, Any]:
    """The params a run does not have yet (MLflow refuses to change one; JSON may have changed how one prints)."""
    return {k: v for k, v in params.items() if k not in logged}


def _unit(metric: str, results: Results) -> str | None:
    """A metric's unit: the registry's, else the one results.json defines (a user's metric), else unknown."""
    if metric in REGISTRY:
        return REGISTRY.get(metric).unit
    defined = results.metric_definitions.get(metric)
    return defined.get("unit") if isinstance(defined, dict) else getattr(defined, "unit", None)


def check_sendable(results: Results, path: Path) -> None:
    """Refuse, before any store is opened, a results.json whose numbers are not what the schema promises: a
    headline metric NaN or null without ``invalid_reason``, a fraction (mIoU, per-class IoU, ...) outside [0, 1],
    a speed that is not a positive finite number."""
    check_headlines(results, str(path))
    for i, record in enumerate(results.models):
        where = f"{path}: models[{i}] ('{record.name}')"
        fractions = [(f"metrics.{k}", v) for k, v in record.metrics.items() if _unit(k, results) == "fraction"]
        fractions += [(f"per_class.{row.name}.{k}", getattr(row, k)) for row in record.per_class
                      for k in ("IoU", "Dice", "Acc")]
        for key, value in fractions:
            if value is not None and math.isfinite(value) and not 0 <= value <= 1:
                raise UserError(f"{where}.{key} is {value}, outside [0, 1] (a fraction); segbench log sends "
                                "results.json files as segbench wrote them")
        for j, speed in enumerate(record.speed):
            value = speed.images_per_second
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"{where}.speed[{j}].images_per_second is {value}; expected a positive number")


def send_results(source: Path, uri: str | None = None) -> tuple[str, Path, int]:
    """Log the runs of a finished results.json (a file or its folder) to MLflow: the runs it names are completed
    and closed FINISHED, runs the store never got are created and their ids written into results.json. Return the
    store, the results.json and the number of runs logged (0: the store has them all already)."""
    path = source / RESULTS_NAME if source.is_dir() else source
    results = read_results(path)
    check_sendable(results, path)  # structure and ranges, before any store is opened
    if results.kind == "bench":
        raise UserError(f"{path}: segbench log sends results.json files of run, eval or score")
    suite, mlflow = results.suite, results.mlflow or Mlflow()
    before = results.to_dict()
    uri = uri or mlflow.tracking_uri or tracking_uri(TrackingConfig())
    check_store(uri)
    experiment = (suite.config.get("tracking") or {}).get("experiment") or suite.name
    tracker = Tracker(TrackingConfig(uri=uri), experiment)
    if tracker.lost is not None:
        raise UserError(f"MLflow at {uri}: {tracker.lost}")
    same_store = mlflow.tracking_uri == uri
    parent_id, logged, status = _existing(tracker, mlflow.parent_run_id) if same_store else (None, set(), None)
    if status == "FINISHED":  # closed last, after every model's run and the results.json artifact
        return uri, path, 0
    tags = parent_tags(results.kind, suite.name, suite.config_hash or "", results.environment, suite.shard)
    parent = tracker.start(f"{suite.name}-{path.parent.name}", params=_new(parent_params(suite.config), logged),
                           tags=tags, run_id=parent_id)
    for record in results.models:
        child_id, logged, _ = _existing(tracker, record.mlflow_run_id) if parent_id else (None, set(), None)
        record.mlflow_run_id = child = tracker.start(record.name, parent=parent, run_id=child_id,
                                                     params=_new(model_params(record), logged))
        tracker.log(child, metrics=model_metrics(record), series=model_series(record.train))
        csv = path.parent / per_class_csv(record.name)
        if csv.is_file():
            tracker.artifact(child, csv)
        tracker.end(child, "FINISHED")
    results.mlflow = mlflow.model_copy(update={"tracking_uri": uri, "experiment_id": tracker.experiment_id,
                                               "parent_run_id": parent})
    if tracker.lost is None:
        if results.to_dict() != before:  # new run ids
            write_results(path, results)
        tracker.artifact(parent, path)
        tracker.end(parent, "FINISHED")
    if tracker.lost is not None:
        tracker.end_all("FAILED")
        raise UserError(f"MLflow at {uri}: {tracker.lost}; run segbench log again when the store answers")
    return uri, path, 1 + len(results.models)
