"""``segbench run`` and ``segbench bench``: for each model of a suite, build, train, evaluate, time and log it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segbench import metrics as seg_metrics
from segbench.checkpoints import (
    WEIGHTS_FILE,
    backbone_of,
    check_fit,
    describe_weights,
    load_backbone_weights,
    match_backbone,
    read_state_dict,
    save_checkpoint,
    sha256_file,
)
from segbench.config import SuiteConfig, to_dict
from segbench.console import leaderboard, print_leaderboard, print_speed_table
from segbench.datasets import DatasetInfo, build_dataset, check_batchable, dataset_info, make_loader
from segbench.environment import resolve_device
from segbench.errors import warn
from segbench.evaluate import evaluate
from segbench.inference import describe_mode
from segbench.losses import build_loss
from segbench.models import ModelSpec, build_model, load_model, parse_spec
from segbench.parity import evaluate_backends, parity_metrics
from segbench.results import per_class_table
from segbench.session import Session
from segbench.speed import speed_records, time_isolated, time_model
from segbench.tracking import Tracker
from segbench.train import train


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _speed_metrics(speed: list[dict]) -> dict[str, float]:
    """MLflow metrics for the speed records: per backend (eager unnamed, others as ``.BACKEND``), the first batch
    size unqualified, every one with its size (``images_per_second.onnxruntime.bs4``)."""
    out: dict[str, float] = {}
    for record in speed:
        backend = record.get("backend", "eager")
        tag = "" if backend == "eager" else f".{backend}"
        suffixes = ([] if f"images_per_second{tag}" in out else [tag]) + [f"{tag}.bs{record['requested_batch_size']}"]
        for suffix in suffixes:
            out[f"images_per_second{suffix}"] = record["images_per_second"]
            out[f"latency_ms_p50{suffix}"] = record["latency_ms_p50"]
    return out


def _logged_metrics(record: dict) -> dict[str, float]:
    """The MLflow metrics of a model record: summary, per-class and category IoU, evaluation and speed figures."""
    logged = dict(record["metrics"])
    logged.update({f"IoU.{row['class']}": row["IoU"] for row in record["per_class"]})
    logged.update({f"IoU.category.{k}": v for k, v in record.get("categories", {}).get("IoU", {}).items()})
    evaluation = record["evaluation"]
    logged["eval_images_per_second"] = evaluation["images_per_second"]
    logged["eval_forward_share"] = evaluation["forward_share"]
    logged["eval_data_wait_share"] = evaluation["data_wait_share"]
    logged["data_skipped"] = record["data"]["skipped"]
    logged.update(_speed_metrics(record.get("speed", [])))
    return {k: v for k, v in logged.items() if v is not None}


def run_model(spec: ModelSpec, cfg: SuiteConfig, info: DatasetInfo, train_set: Dataset | None, val_set: Dataset,
              device: torch.device, tracker: Tracker, parent_run: str | None, out_dir: Path) -> dict:
    """Train (if the suite says so), evaluate and time one model; return its results.json record."""
    seed_everything(cfg.seed)
    weights: dict = {"model": None, "backbone": None}

    def load_backbone(model: torch.nn.Module) -> None:
        loaded = load_backbone_weights(model, cfg.backbone_weights[spec.backbone], spec.backbone,
                                       cfg.backbone_key_map.get(spec.backbone))
        weights["backbone"] = loaded
        print(f"{spec.name}: backbone weights {loaded['file']} filled {loaded['loaded']} of {loaded['total']} "
              "backbone tensors")

    built = load_model(spec, info.classes, cfg.weights.get(spec.name), cfg.eval.class_map,
                       prepare=load_backbone if spec.backbone in cfg.backbone_weights else None)
    for note in built.notes:
        warn(note)
    model = built.module
    if spec.name in cfg.weights and Path(cfg.weights[spec.name]).exists():
        weights["model"] = describe_weights(Path(cfg.weights[spec.name]))
    run_id = tracker.start(spec.name, parent=parent_run,
                           params={"model": spec.name, "source": spec.source, "arch": spec.arch,
                                   "backbone": spec.backbone} | _weights_params(weights))
    try:
        record: dict = {"name": spec.name, "arch": spec.arch, "backbone": spec.backbone,
                        "params": sum(p.numel() for p in model.parameters()), "weights": weights,
                        "origin": built.record()}
        if train_set is not None:
            loader = make_loader(train_set, cfg.train.batch_size, True, cfg.data.num_workers, device, cfg.seed)
            loss_fn = build_loss(cfg.train.loss, info.ignore_index, cfg.train.class_weights)
            log = train(model, loader, loss_fn, cfg.train, device, desc=f"train {spec.name}", progress=cfg.progress)
            record["train"] = {"iters": log.iters, "seconds": log.seconds, "final_loss": log.final_loss,
                               "data_wait_share": log.data_seconds / log.seconds}
            tracker.log(run_id, metrics={"train_seconds": log.seconds}, series={"train_loss": log.losses})
            if cfg.train.save_checkpoint:
                folder = out_dir / "checkpoints" / spec.name
                save_checkpoint(model, folder, {"model": spec.name, "arch": spec.arch, "backbone": spec.backbone,
                                                "num_classes": info.num_classes, "classes": list(info.classes),
                                                "suite": cfg.name, "config": to_dict(cfg)})
                record["checkpoint"] = {"path": str(folder.relative_to(out_dir)),
                                        "sha256": sha256_file(folder / WEIGHTS_FILE)}

        val_loader = make_loader(val_set, cfg.eval.batch_size, False, cfg.data.num_workers, device, cfg.seed)
        result = evaluate(model, val_loader, info.num_classes, info.ignore_index, device, cfg.eval,
                          desc=f"eval {spec.name}", progress=cfg.progress)
        scores = result.confusion.compute()
        table = per_class_table(info, scores)
        record["metrics"] = scores.summary()
        record["per_class"] = table.to_dict(orient="records")
        record["evaluation"] = describe_mode(cfg.eval) | {
            "crf": cfg.eval.crf.enabled,
            "split": cfg.data.val_split,
            "images": result.images,
            "seconds": result.seconds,
            "images_per_second": result.images_per_second,
            "forward_images_per_second": result.forward_images_per_second,
            "forward_share": result.forward_share,
            "data_wait_share": result.data_share,
        }
        record["confusion_matrix"] = result.confusion.matrix.cpu().tolist()
        if info.categories:
            matrix = np.array(record["confusion_matrix"])
            record["categories"] = {"IoU": seg_metrics.category_iou(matrix, info.categories)}
        record["data"] = {"skipped": getattr(val_set, "skipped", 0) + getattr(train_set, "skipped", 0),
                          "problems": [str(p) for p in (getattr(train_set, "problems", []) +
                                                        getattr(val_set, "problems", []))[:20]],
                          "classes_without_pixels": [info.classes[i] for i in range(info.num_classes)
                                                     if table["support"][i] == 0]}
        intersections, unions = result.confusion.per_image_stats()
        record["per_image"] = {"intersection": intersections.tolist(), "union": unions.tolist()}
        if cfg.eval.backends != ["eager"]:
            record["evaluation"]["backends"] = evaluate_backends(spec.name, model, result, cfg, info, val_set, device)
            tracker.log(run_id, metrics=parity_metrics(record["evaluation"]["backends"]))
        if cfg.bench.enabled:
            record["speed"], record["speed_skipped"] = speed_records(model, cfg, tuple(val_set[0][0].shape[-2:]),
                                                                     device, spec.name)

        csv_path = out_dir / f"per_class_{spec.name}.csv"
        table.to_csv(csv_path, index=False)
        tracker.log(run_id, metrics=_logged_metrics(record), params={"params": record["params"]})
        tracker.artifact(run_id, csv_path)
        record["mlflow_run_id"] = run_id
        tracker.end(run_id, "FINISHED")
        return record
    except Exception:
        tracker.end(run_id, "FAILED")
        raise


def _weights_params(weights: dict) -> dict[str, object]:
    """MLflow params naming the weights a model started from ("random" when none were loaded)."""
    params: dict[str, object] = {}
    for part, key in (("model", "weights"), ("backbone", "backbone_weights")):
        loaded = weights[part]
        params[key] = loaded["file"] if loaded else "random"
        if loaded:
            params[f"{key}_sha256"] = loaded["sha256"]
        if loaded and "coverage" in loaded:
            params[f"{key}_coverage"] = f"{loaded['loaded']}/{loaded['total']}"
    return params


def check_weights(cfg: SuiteConfig, specs: list[ModelSpec], num_classes: int) -> None:
    """Prove, before anything is created, that every weights file of the suite loads: checksums, keys and shapes
    (models are built on the meta device: no memory, no time)."""
    for spec in specs:
        backbone_file, model_file = cfg.backbone_weights.get(spec.backbone), cfg.weights.get(spec.name)
        if spec.external or (backbone_file is None and model_file is None):  # published: checked by config
            continue
        with torch.device("meta"):
            model = build_model(spec, num_classes)
        if backbone_file is not None:
            match_backbone(backbone_of(model), read_state_dict(Path(backbone_file)), backbone_file, spec.backbone,
                           cfg.backbone_key_map.get(spec.backbone))
        if model_file is not None:
            check_fit(model, read_state_dict(Path(model_file)), f"weights.{spec.name}={model_file}")


def _warn_absent(dataset: Dataset) -> None:
    absent = getattr(dataset, "absent_classes", ())
    if absent:
        warn(f"{dataset.name} {dataset.split}: no pixel of class {', '.join(repr(c) for c in absent)} in "
             f"{len(dataset)} images; its IoU is NaN and left out of mIoU")


def run(cfg: SuiteConfig) -> Path:
    """Run every model of ``cfg``; write results.json and return its path."""
    info = dataset_info(cfg.data)
    specs = [parse_spec(name) for name in cfg.models]
    device = resolve_device(cfg.device)
    train_set = build_dataset(cfg.data, cfg.data.train_split, cfg.seed) if cfg.train.enabled else None
    val_set = build_dataset(cfg.data, cfg.data.val_split, cfg.seed)
    if train_set is not None:
        check_batchable(train_set, cfg.train.batch_size)
    check_batchable(val_set, cfg.eval.batch_size)
    check_weights(cfg, specs, info.num_classes)
    _warn_absent(val_set)
    with Session(cfg, "run", device) as session:
        records = [run_model(spec, cfg, info, train_set, val_set, session.device, session.tracker, session.parent,
                             session.work_dir) for spec in specs]
        results = session.header() | {
            "dataset": {"name": info.name, "classes": list(info.classes), "split": cfg.data.val_split},
            "convention": seg_metrics.convention(info.num_classes, info.ignore_index,
                                                 f"{info.name}-{info.num_classes}"),
            "models": records,
        }
        path = session.finish("results.json", results)
    print_leaderboard(leaderboard(results, cfg.eval.metrics),
                      f"{cfg.name} ({session.env['device_name']}, suite hash {session.suite_hash})")
    return path


def bench(cfg: SuiteConfig) -> Path:
    """Time every model of ``cfg`` (random weights, no data set); write bench.json and return its path."""
    specs = [parse_spec(name) for name in cfg.models]
    image_size = tuple(cfg.bench.input_size or (cfg.data.image_size, cfg.data.image_size))
    # each model in a fresh process unless asked otherwise; a published model's weights are the model, models
    # built here are timed with random weights
    timer = time_isolated if cfg.bench.isolate else time_model
    with Session(cfg, "bench") as session:
        records = []
        for spec in specs:
            run_id = session.tracker.start(spec.name, parent=session.parent,
                                           params={"model": spec.name, "arch": spec.arch, "backbone": spec.backbone})
            speed, skipped = timer(cfg, spec.name, image_size, session.device)
            session.tracker.log(run_id, metrics=_speed_metrics(speed))
            session.tracker.end(run_id, "FINISHED")
            records.append({"name": spec.name, "arch": spec.arch, "backbone": spec.backbone,
                            "params": speed[0]["params"] if speed else None, "speed": speed,
                            "speed_skipped": skipped, "mlflow_run_id": run_id})
        path = session.finish("bench.json", session.header() | {"models": records})
    print_speed_table(records, f"{cfg.name} speed ({session.env['device_name']}, {session.env['threads']} threads)")
    return path
