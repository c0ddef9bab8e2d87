"""results.json's robustness record of a model (part of segbench.results.schema, which imports it; read and written
only through it): scores under each corruption and severity, mPC and rPC with their intervals, what corrupting cost,
and scores per adverse condition (ACDC); and the MLflow metrics it adds to a model's run."""

from __future__ import annotations

from segbench.config.typed import Record
from segbench.metrics.statistics import Interval


class CorruptedScores(Record):
    corruption: str  # imagecorruptions name, e.g. gaussian_noise
    severity: int  # 1..5
    metrics: dict[str, float | None] = {}  # what the clean evaluation reports, on this corrupted view
    seconds: float | None = None  # wall time of this view's evaluation


class CorruptionCost(Record):
    corrupted_images_computed: int  # corrupted images computed for this model (0 when all came from the cache)
    corrupted_images_from_cache: int  # corrupted images read from the corruption cache
    corruption_seconds: float  # producing corrupted views (computing or reading them), summed over loader workers
    evaluation_seconds: float  # wall time of the clean and every corrupted evaluation
    corruption_share: float | None = None  # corruption_seconds / evaluation_seconds


class GroupScores(Record):
    mIoU: float | None  # of the group's images alone (dataset-level counts)
    mDice: float | None
    images: int


class Robustness(Record):
    corruptions: list[str] = []  # evaluated corruptions (eval.corruptions resolved)
    severities: list[int] = []  # evaluated severities
    package: str | None = None  # version of the corruption package (imagecorruptions-imaug)
    mPC: float | None = None  # mean over corruptions and severities of mIoU
    rPC: float | None = None  # mPC / clean mIoU
    intervals: dict[str, Interval] = {}  # mPC and rPC bootstrap intervals
    per_corruption: dict[str, dict[str, float | None]] = {}  # per corruption, each metric's mean over severities
    per_severity: dict[str, float | None] = {}  # severity -> mean mIoU over the corruptions
    conditions: list[CorruptedScores] = []  # one per corruption and severity
    cost: CorruptionCost | None = None  # what producing the corrupted views cost
    adverse: dict[str, GroupScores] | None = None  # per adverse condition (ACDC: fog, night, rain, snow)


def robustness_metrics(robustness: Robustness | None) -> dict[str, float]:
    """MLflow metrics of a robustness record: mIoU per corruption (mean over severities), per corruption and
    severity, per severity, and per adverse condition."""
    if robustness is None:
        return {}
    out = {f"mIoU.corruption.{name}": values.get("mIoU") for name, values in robustness.per_corruption.items()}
    out |= {f"mIoU.corruption.{row.corruption}.s{row.severity}": row.metrics.get("mIoU")
            for row in robustness.conditions}
    out |= {f"mIoU.severity.{s}": v for s, v in robustness.per_severity.items()}
    out |= {f"mIoU.condition.{name}": values.mIoU for name, values in (robustness.adverse or {}).items()}
    if robustness.cost is not None:
        out["corruption_share"] = robustness.cost.corruption_share
    return {k: v for k, v in out.items() if v is not None}
