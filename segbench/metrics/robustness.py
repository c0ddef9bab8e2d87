"""Robustness under corruption (Michaelis et al. 2019, "Benchmarking robustness in object detection"; for
segmentation Kamann & Rother, CVPR 2020): ``mPC``, the mean over corruptions c and severities s of mIoU under
(c, s), and ``rPC = mPC / clean mIoU``; per corruption the mean over its severities; bootstrap intervals of both that
resample the images (the same resampled images for the clean split and every corrupted view, since they are the
same images); and per-group scores (ACDC's conditions) from per-image intersections and unions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from segbench.metrics.registry import MetricEntry, register_entries
from segbench.metrics.statistics import LEVEL, RESAMPLES, Interval, score

ROBUSTNESS_ENTRIES = (  # computed from a model's evaluations under corruption (segbench.evaluation.robustness),
    # not accumulated batch by batch: registered as numbers, with no accumulator
    MetricEntry("mPC", "mean performance under corruption: the mean over eval.corruptions and eval.severities "
                "of mIoU on the corrupted split", "each corrupted view scored like mIoU (dataset-level counts), "
                "then an unweighted mean over corruptions and severities",
                "definition of Michaelis et al. 2019 mPC with mIoU as the performance measure (Kamann & "
                "Rother 2020); checked by hand"),
    MetricEntry("rPC", "relative performance under corruption: mPC / mIoU on the clean split",
                "ratio of the two dataset-level numbers of the same model on the same images",
                "definition of Michaelis et al. 2019 rPC; checked by hand"),
)
register_entries(ROBUSTNESS_ENTRIES)
ROBUSTNESS_METRICS = tuple(entry.name for entry in ROBUSTNESS_ENTRIES)


@dataclass(frozen=True)
class Condition:
    """One corruption at one severity: its headline metrics and its per-image intersections and unions."""

    corruption: str
    severity: int
    metrics: dict[str, float]
    intersection: np.ndarray  # images x classes
    union: np.ndarray


def mean_pc(conditions: Sequence[Condition], metric: str = "mIoU") -> float:
    """mPC: the unweighted mean of ``metric`` over every (corruption, severity); NaN without conditions."""
    values = [c.metrics.get(metric, float("nan")) for c in conditions]
    return float(np.mean(values)) if values else float("nan")


def relative_pc(mpc: float, clean: float) -> float:
    """rPC = mPC / clean performance; NaN when the clean number is 0 or NaN."""
    return mpc / clean if clean and np.isfinite(clean) else float("nan")


def per_corruption(conditions: Sequence[Condition]) -> dict[str, dict[str, float]]:
    """Per corruption, each metric's mean over its severities."""
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(c.corruption for c in conditions):
        rows = [c.metrics for c in conditions if c.corruption == name]
        keys = dict.fromkeys(k for row in rows for k in row)
        out[name] = {k: float(np.mean([row.get(k, np.nan) for row in rows])) for k in keys}
    return out


def per_severity(conditions: Sequence[Condition], metric: str = "mIoU") -> dict[int, float]:
    """Per severity, the mean of ``metric`` over the corruptions (the curve of performance against severity)."""
    severities = sorted({c.severity for c in conditions})
    return {s: float(np.mean([c.metrics[metric] for c in conditions if c.severity == s])) for s in severities}


def bootstrap_robustness(clean: tuple[np.ndarray, np.ndarray], conditions: Sequence[Condition],
                         resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> dict[str, Interval]:
    """Percentile bootstrap intervals of mPC and rPC (from mIoU): each resample draws the images with replacement
    once and scores the clean split and every corrupted view on those same images."""
    clean_i, clean_u = (np.asarray(a, dtype=np.float64) for a in clean)
    images = len(clean_i)
    if not conditions or not images:
        return {}
    counts = np.random.default_rng(seed).multinomial(images, np.full(images, 1.0 / images), size=resamples)
    counts = counts.astype(np.float64)
    total = np.zeros(resamples)
    for condition in conditions:
        total += score(counts @ np.asarray(condition.intersection, dtype=np.float64),
                       counts @ np.asarray(condition.union, dtype=np.float64))
    mpc_draws = total / len(conditions)
    with np.errstate(invalid="ignore", divide="ignore"):
        rpc_draws = mpc_draws / score(counts @ clean_i, counts @ clean_u)
    mpc = float(np.mean([score(np.asarray(c.intersection).sum(0), np.asarray(c.union).sum(0)) for c in conditions]))
    rpc = relative_pc(mpc, float(score(clean_i.sum(0), clean_u.sum(0))))
    return {"mPC": Interval.of(mpc, mpc_draws, level, resamples),
            "rPC": Interval.of(rpc, rpc_draws, level, resamples)}


def by_group(intersection: np.ndarray, union: np.ndarray, ids: Sequence[str],
             group_of: Callable[[str], str]) -> dict[str, dict[str, float]]:
    """Per group of images (e.g. ACDC's conditions, from each sample id), mIoU and mDice from the group's summed
    intersections and unions (the dataset-level numbers of that group alone) and its number of images."""
    intersection, union = np.asarray(intersection, dtype=np.float64), np.asarray(union, dtype=np.float64)
    groups = np.array([group_of(i) for i in ids])
    out = {}
    for group in dict.fromkeys(groups.tolist()):
        chosen = groups == group
        i, u = intersection[chosen].sum(0), union[chosen].sum(0)
        out[group] = {"mIoU": float(score(i, u)), "mDice": float(score(i, u, "mDice")), "images": int(chosen.sum())}
    return out
