"""Evaluation under corruption (``eval.corruptions``, ``eval.severities``) and per adverse condition (ACDC).

Each model is evaluated on the clean split (the ordinary evaluation) and then on every corruption x severity: the
split wrapped in a ``CorruptedView``, so that images are corrupted in the loader's worker processes and read from the
corruption cache when another model (or an earlier run) computed them already. Each corrupted view is scored with
everything the clean evaluation reports (the confusion-matrix metrics and, with ``eval.passport``, the passport's
headline numbers); the model record's ``robustness`` holds them with mPC, rPC, their bootstrap intervals, the means
per corruption and per severity, and what producing the corrupted views cost. mPC and rPC also go to ``metrics``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from segbench.config.schema import SuiteConfig
from segbench.core.distributed import World, gather, shard
from segbench.data.base import DatasetInfo, sample_ids
from segbench.data.corruptions import (
    CorruptedView,
    CorruptionCache,
    CorruptionMeter,
    check_severity,
    package_version,
    resolve,
)
from segbench.data.layouts.acdc import condition_of
from segbench.data.registry import make_loader
from segbench.errors import UserError
from segbench.evaluation.loop import evaluate
from segbench.metrics.passport import Passport, passport_record
from segbench.metrics.robustness import (
    Condition,
    bootstrap_robustness,
    by_group,
    mean_pc,
    per_corruption,
    per_severity,
    relative_pc,
)

GROUPED: dict[str, Callable[[str], str]] = {"acdc": condition_of}  # data set -> the group of a sample id
CORRUPTIBLE = ("raw_image", "with_image", "sample_id")  # what a data set needs for corrupted views


def conditions(cfg: SuiteConfig) -> list[tuple[str, int]]:
    """Every (corruption, severity) the suite asks for, corruptions in ``eval.corruptions``' order; [] for none."""
    names = resolve(cfg.eval.corruptions or [])
    return [(name, check_severity(severity)) for name in names for severity in cfg.eval.severities]


def check_corruptions(cfg: SuiteConfig, dataset: Dataset) -> None:
    """Raise a UserError, before any work, when the corruption settings cannot run on ``dataset``."""
    if not cfg.eval.corruptions:
        return
    if not cfg.eval.severities:
        raise UserError("eval.severities: expected at least one severity from 1 to 5, e.g. [1,2,3,4,5]")
    for severity in cfg.eval.severities:
        check_severity(severity)
    conditions(cfg)  # unknown names, with suggestions
    package_version()  # the package is installed
    missing = [name for name in CORRUPTIBLE if not hasattr(dataset, name)]
    if missing:
        raise UserError(f"eval.corruptions: the {getattr(dataset, 'name', '?')} data set cannot hand over its raw "
                        f"images (no {', '.join(missing)}), so it cannot be corrupted")


def evaluate_corruptions(model: torch.nn.Module, val_set: Dataset, info: DatasetInfo, cfg: SuiteConfig,
                         world: World, device: torch.device, clean: dict, desc: str, progress: bool) -> dict:
    """The ``robustness`` record of ``model``: each corrupted view of ``val_set`` evaluated as the clean split was
    (each rank on its contiguous shard); ``clean`` is the clean evaluation's record (metrics, per_image,
    evaluation seconds)."""
    pairs = conditions(cfg)
    store, meter = CorruptionCache(), CorruptionMeter()
    scored: list[Condition] = []
    rows = []
    seconds = 0.0
    for k, (name, severity) in enumerate(pairs, 1):
        view = CorruptedView(val_set, name, severity, store, meter)
        passport = Passport.build(cfg.eval, cfg.data, info, view, device)
        data = passport.dataset(view) if passport else view
        part = Subset(data, shard(len(view), world)) if world.distributed else data
        loader = make_loader(part, cfg.eval.batch_size, False, cfg.data.num_workers, device, cfg.seed)
        result = evaluate(model, loader, info.num_classes, info.ignore_index, device, cfg.eval,
                          desc=f"{desc} {name} s{severity} [{k}/{len(pairs)}]", progress=progress,
                          passport=passport)
        intersection, union = result.confusion.per_image_stats()
        scores = result.confusion.compute()
        extra, _ = passport_record(result, scores, view, intersection, union)
        metrics = scores.summary() | extra
        scored.append(Condition(name, severity, metrics, intersection, union))
        wall = max(gather(result.seconds))
        seconds += wall
        rows.append({"corruption": name, "severity": severity, "metrics": metrics, "seconds": wall})
    mpc = mean_pc(scored)
    rpc = relative_pc(mpc, clean["metrics"]["mIoU"])
    intervals = bootstrap_robustness((np.asarray(clean["per_image"]["intersection"]),
                                      np.asarray(clean["per_image"]["union"])), scored, seed=cfg.seed)
    corrupting = sum(gather(meter.seconds))
    total = seconds + clean["evaluation"]["seconds"]
    return {
        "corruptions": list(dict.fromkeys(name for name, _ in pairs)),
        "severities": [int(s) for s in cfg.eval.severities],
        "package": package_version(),
        "mPC": mpc,
        "rPC": rpc,
        "intervals": {key: interval.to_dict() for key, interval in intervals.items()},
        "per_corruption": per_corruption(scored),
        "per_severity": {str(s): v for s, v in per_severity(scored).items()},
        "conditions": rows,
        "cost": {"corrupted_images_computed": sum(gather(meter.computed)),
                 "corrupted_images_from_cache": sum(gather(meter.hits)),
                 "corruption_seconds": corrupting,
                 "evaluation_seconds": total,
                 "corruption_share": corrupting / total if total > 0 else float("nan")},
    }


def adverse_conditions(dataset: Dataset, intersection: np.ndarray, union: np.ndarray) -> dict | None:
    """Per adverse condition of a data set that has them (ACDC: fog, night, rain, snow, from each sample id's
    prefix), mIoU, mDice and images; None for other data sets."""
    group_of = GROUPED.get(getattr(dataset, "name", ""))
    if group_of is None or len(intersection) != len(dataset):
        return None
    return by_group(intersection, union, sample_ids(dataset), group_of)


def logged_metrics(robustness: dict | None) -> dict[str, float]:
    """MLflow metrics of a robustness record: mIoU per corruption (mean over severities), per corruption and
    severity, per severity, and per adverse condition."""
    if not robustness:
        return {}
    out = {f"mIoU.corruption.{name}": values.get("mIoU")
           for name, values in robustness.get("per_corruption", {}).items()}
    out |= {f"mIoU.corruption.{row['corruption']}.s{row['severity']}": row["metrics"].get("mIoU")
            for row in robustness.get("conditions", [])}
    out |= {f"mIoU.severity.{s}": v for s, v in robustness.get("per_severity", {}).items()}
    out |= {f"mIoU.condition.{name}": values["mIoU"] for name, values in (robustness.get("adverse") or {}).items()}
    cost = robustness.get("cost")
    if cost:
        out["corruption_share"] = cost["corruption_share"]
    return {k: v for k, v in out.items() if v is not None}
