"""``segbench run``: for each model of a suite, build, train, evaluate, time and log it."""

from __future__ import annotations

import random
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from segbench import metrics as seg_metrics
from segbench.benchmark import measure_throughput
from segbench.config import SuiteConfig, config_hash, to_dict
from segbench.datasets import DatasetInfo, build_dataset, dataset_info
from segbench.environment import fingerprint, resolve_device
from segbench.evaluate import evaluate
from segbench.losses import build_loss
from segbench.models import ModelSpec, build_model, parse_spec
from segbench.results import SCHEMA_VERSION, leaderboard, per_class_table, print_leaderboard, write_json
from segbench.tracking import Tracker
from segbench.train import train


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def output_dir(cfg: SuiteConfig) -> Path:
    """``output_dir`` if set, else ``outputs/<suite>/<timestamp>``; never an existing folder."""
    path = Path(cfg.output_dir) if cfg.output_dir else Path("outputs") / cfg.name / datetime.now().strftime(
        "%Y%m%d-%H%M%S")
    if path.exists() and any(path.iterdir()):
        base, n = path, 1
        while path.exists():
            path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def _flat(prefix: str, values: dict) -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and key != "loss":
            out.update(_flat(f"{prefix}{key}.", value))
        else:
            out[f"{prefix}{key}"] = value
    return out


def run_model(spec: ModelSpec, cfg: SuiteConfig, info: DatasetInfo, device: torch.device,
              tracker: Tracker, parent_run: str | None, out_dir: Path) -> dict:
    """Train (if the suite says so), evaluate and time one model; return its results.json record."""
    seed_everything(cfg.seed)
    model = build_model(spec, info.num_classes)
    run_id = tracker.start(spec.name, parent=parent_run,
                           params={"model": spec.name, "arch": spec.arch, "backbone": spec.backbone})
    try:
        record: dict = {"name": spec.name, "arch": spec.arch, "backbone": spec.backbone,
                        "params": sum(p.numel() for p in model.parameters())}
        if cfg.train.enabled:
            train_set = build_dataset(cfg.data, "train", cfg.seed)
            loader = DataLoader(train_set, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                                num_workers=cfg.data.num_workers,
                                generator=torch.Generator().manual_seed(cfg.seed))
            loss_fn = build_loss(cfg.train.loss, info.ignore_index, cfg.train.class_weights)
            log = train(model, loader, loss_fn, cfg.train, device, desc=f"train {spec.name}", progress=cfg.progress)
            record["train"] = {"iters": log.iters, "seconds": log.seconds, "final_loss": log.final_loss}
            tracker.log(run_id, metrics={"train_seconds": log.seconds}, series={"train_loss": log.losses})

        val_set = build_dataset(cfg.data, "val", cfg.seed)
        val_loader = DataLoader(val_set, batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers)
        result = evaluate(model, val_loader, info.num_classes, info.ignore_index, device,
                          desc=f"eval {spec.name}", progress=cfg.progress)
        scores = result.confusion.compute()
        record["metrics"] = scores.summary()
        record["per_class"] = per_class_table(info, scores).to_dict(orient="records")
        record["evaluation"] = {
            "mode": "whole",
            "split": "val",
            "images": result.images,
            "seconds": result.seconds,
            "images_per_second": result.images_per_second,
            "forward_share": result.forward_seconds / result.seconds if result.seconds else None,
        }
        record["confusion_matrix"] = result.confusion.matrix.cpu().tolist()

        if cfg.bench.enabled:
            height, width = val_set[0][0].shape[-2:]
            speed = measure_throughput(model, (cfg.bench.batch_size, 3, height, width), device,
                                       warmup=cfg.bench.warmup, iters=cfg.bench.iters)
            record["speed"] = speed.to_dict()

        csv_path = out_dir / f"per_class_{spec.name}.csv"
        per_class_table(info, scores).to_csv(csv_path, index=False)
        logged = dict(record["metrics"])
        logged.update({f"IoU.{row['class']}": row["IoU"] for row in record["per_class"]})
        logged["eval_images_per_second"] = result.images_per_second
        if "speed" in record:
            logged["images_per_second"] = record["speed"]["images_per_second"]
            logged["latency_ms_p50"] = record["speed"]["latency_ms_p50"]
        tracker.log(run_id, metrics=logged, params={"params": record["params"]})
        tracker.artifact(run_id, csv_path)
        record["mlflow_run_id"] = run_id
        tracker.end(run_id, "FINISHED")
        return record
    except Exception:
        tracker.end(run_id, "FAILED")
        raise


def run(cfg: SuiteConfig) -> Path:
    """Run every model of ``cfg``; write results.json and return its path."""
    device = resolve_device(cfg.device)
    info = dataset_info(cfg.data)
    specs = [parse_spec(name) for name in cfg.models]
    final_dir = output_dir(cfg)
    work_dir = final_dir.with_name(final_dir.name + ".partial")
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    suite_hash = config_hash(cfg)
    env = fingerprint(device)
    tracker = Tracker(cfg.tracking, cfg.tracking.experiment or cfg.name)
    tags = {"segbench.version": env["segbench"], "segbench.suite": cfg.name, "segbench.suite_hash": suite_hash,
            "segbench.device": env["device"], "segbench.hardware": env["device_name"],
            "mlflow.source.git.commit": env["git_commit"] or "unknown"}
    parent = tracker.start(f"{cfg.name}-{final_dir.name}", params=_flat("", to_dict(cfg)), tags=tags)
    try:
        records = [run_model(spec, cfg, info, device, tracker, parent, work_dir) for spec in specs]
        results = {
            "schema_version": SCHEMA_VERSION,
            "suite": {"name": cfg.name, "config_hash": suite_hash, "config": to_dict(cfg)},
            "dataset": {"name": info.name, "classes": list(info.classes), "split": "val"},
            "convention": seg_metrics.convention(info.num_classes, info.ignore_index, f"{info.name}-{info.num_classes}"),
            "environment": env,
            "mlflow": {"tracking_uri": tracker.uri, "experiment_id": tracker.experiment_id, "parent_run_id": parent},
            "models": records,
        }
        write_json(work_dir / "results.json", results)
        tracker.artifact(parent, work_dir / "results.json")
        work_dir.rename(final_dir)
        tracker.end(parent, "FINISHED")
    except KeyboardInterrupt:
        tracker.end_all("KILLED")
        raise
    except Exception:
        tracker.end_all("FAILED")
        raise
    print_leaderboard(leaderboard(results, cfg.eval.metrics), f"{cfg.name} ({device}, suite hash {suite_hash})")
    return final_dir / "results.json"
