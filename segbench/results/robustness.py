"""results.json's robustness record of a model (part of segbench.results.schema, which imports it; read and written
only through it): scores under each corruption and severity, mPC and rPC with their intervals, what corrupting cost,
and scores per adverse condition (ACDC)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segbench.results.typed import extra_fields


@dataclass
class IntervalRecord:
    estimate: float | None  # the point estimate (fraction)
    low: float | None  # percentile bootstrap interval over images
    high: float | None
    level: float  # e.g. 0.95
    resamples: int
    extra_fields: dict[str, Any] = extra_fields()


@dataclass
class CorruptedScores:
    corruption: str  # imagecorruptions name, e.g. gaussian_noise
    severity: int  # 1..5
    metrics: dict[str, float | None] = field(default_factory=dict)  # what the clean evaluation reports, on this view
    seconds: float | None = None  # wall time of this view's evaluation
    extra_fields: dict[str, Any] = extra_fields()


@dataclass
class CorruptionCost:
    corrupted_images_computed: int  # corrupted images computed for this model (0 when all came from the cache)
    corrupted_images_from_cache: int  # corrupted images read from the corruption cache
    corruption_seconds: float  # producing corrupted views (computing or reading them), summed over loader workers
    evaluation_seconds: float  # wall time of the clean and every corrupted evaluation
    corruption_share: float | None = None  # corruption_seconds / evaluation_seconds
    extra_fields: dict[str, Any] = extra_fields()


@dataclass
class GroupScores:
    mIoU: float | None  # of the group's images alone (dataset-level counts)
    mDice: float | None
    images: int
    extra_fields: dict[str, Any] = extra_fields()


@dataclass
class Robustness:
    corruptions: list[str] = field(default_factory=list)  # evaluated corruptions (eval.corruptions resolved)
    severities: list[int] = field(default_factory=list)  # evaluated severities
    package: str | None = None  # version of the corruption package (imagecorruptions-imaug)
    mPC: float | None = None  # mean over corruptions and severities of mIoU
    rPC: float | None = None  # mPC / clean mIoU
    intervals: dict[str, IntervalRecord] = field(default_factory=dict)  # mPC and rPC bootstrap intervals
    per_corruption: dict[str, dict[str, float | None]] = field(default_factory=dict)  # mean over severities
    per_severity: dict[str, float | None] = field(default_factory=dict)  # severity -> mean mIoU over corruptions
    conditions: list[CorruptedScores] = field(default_factory=list)  # one per corruption and severity
    cost: CorruptionCost | None = None  # what producing the corrupted views cost
    adverse: dict[str, GroupScores] | None = None  # per adverse condition (ACDC: fog, night, rain, snow)
    extra_fields: dict[str, Any] = extra_fields()
