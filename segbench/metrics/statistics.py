"""Bootstrap intervals for mIoU and mDice from per-image intersections and unions.

Resampling unit: the image. A resample draws the evaluated images with replacement, sums their
intersections and unions per class and takes the dataset-level score with the main metric's
convention: a class with zero union in the resample is NaN and left out of the mean. Percentile
intervals; seeded; vectorised as (resample counts) @ (per-image sums).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from segbench.config.typed import Record

RESAMPLES = 1000
CHUNK_BYTES = 32 * 2**20  # resample counts held at once (resamples x images float64)
LEVEL = 0.95
STATISTICS = ("mIoU", "mDice")  # the scores per-image intersections and unions determine


class Interval(Record):
    """A point estimate and its bootstrap percentile interval, in the unit of the score (fractions); results.json
    stores it as it is."""

    estimate: float | None  # the point estimate
    low: float | None  # percentile bootstrap interval over images
    high: float | None
    level: float  # e.g. 0.95
    resamples: int

    @classmethod
    def of(cls, estimate: float, draws: np.ndarray, level: float, resamples: int, **extra) -> Interval:
        """The percentile interval of ``draws`` (NaN draws left out) around ``estimate``."""
        low, high = _percentiles(draws, level)
        return cls(estimate=estimate, low=low, high=high, level=level, resamples=resamples, **extra)


class Difference(Interval):
    """``run - baseline`` with its interval; ``paired`` when both were scored on the same images."""

    paired: bool = False
    p_value: float = float("nan")  # two-sided bootstrap p-value of "no difference"


def score(intersection: np.ndarray, union: np.ndarray, statistic: str = "mIoU") -> np.ndarray:
    """mIoU or mDice over the last axis of class sums; classes with zero union are NaN and left out."""
    if statistic not in STATISTICS:
        raise ValueError(f"no bootstrap for '{statistic}'; expected one of {STATISTICS}")
    intersection = np.asarray(intersection, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    # Dice = 2TP / (2TP + FP + FN) = 2I / (U + I), since U = TP + FP + FN.
    num, den = (intersection, union) if statistic == "mIoU" else (2 * intersection, union + intersection)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(union > 0, num / den, np.nan)
        present = (union > 0).sum(-1)
        return np.where(present > 0, np.nansum(per_class, -1) / present, np.nan)


def _arrays(intersection, union) -> tuple[np.ndarray, np.ndarray]:
    intersection = np.asarray(intersection, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    if intersection.ndim != 2 or intersection.shape != union.shape or len(intersection) == 0:
        raise ValueError(f"expected two equal images x classes arrays, got {intersection.shape} and {union.shape}")
    return intersection, union


def _counts(rng: np.random.Generator, images: int, resamples: int) -> np.ndarray:
    """How often each image is drawn in each resample (resamples x images), rows summing to ``images``."""
    return rng.multinomial(images, np.full(images, 1.0 / images), size=resamples).astype(np.float64)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]  # a resample without the score (NaN, or inf for a ratio) is left out
    if not values.size:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


@lru_cache(maxsize=2)
def _seeded_counts(images: int, resamples: int, seed: int) -> np.ndarray | None:
    """``_counts`` of a fresh ``default_rng(seed)``, kept for the next model with as many images (read-only);
    None when the matrix would exceed CHUNK_BYTES."""
    if images * resamples * 8 > CHUNK_BYTES:
        return None
    counts = _counts(np.random.default_rng(seed), images, resamples)
    counts.flags.writeable = False
    return counts


def _draws(intersection: np.ndarray, union: np.ndarray, statistic: str, resamples: int, seed: int) -> np.ndarray:
    """The statistic of each resample; the counts drawn in blocks of at most CHUNK_BYTES (the same numbers as
    one draw: the generator's stream is consumed row by row)."""
    images = len(intersection)
    counts = _seeded_counts(images, resamples, seed)
    if counts is not None:
        return score(counts @ intersection, counts @ union, statistic)
    rng, rows = np.random.default_rng(seed), max(1, CHUNK_BYTES // (8 * images))
    blocks = []
    for start in range(0, resamples, rows):
        block = _counts(rng, images, min(rows, resamples - start))
        blocks.append(score(block @ intersection, block @ union, statistic))
    return np.concatenate(blocks)


def bootstrap(intersection, union, statistic: str = "mIoU", resamples: int = RESAMPLES, level: float = LEVEL,
              seed: int = 0) -> Interval:
    """Percentile bootstrap interval of mIoU (or mDice) over images, from images x classes arrays."""
    intersection, union = _arrays(intersection, union)
    draws = _draws(intersection, union, statistic, resamples, seed)
    estimate = float(score(intersection.sum(0), union.sum(0), statistic))
    return Interval.of(estimate, draws, level, resamples)


def bootstrap_difference(run: tuple, baseline: tuple, paired: bool, statistic: str = "mIoU",
                         resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> Difference:
    """Bootstrap of ``score(run) - score(baseline)``; ``run`` and ``baseline`` are (intersection, union) pairs.

    Paired: the same resampled images for both (valid only when both were scored on the same images, in
    the same order), which cancels the variation between images. Unpaired: independent resamples.
    """
    run_i, run_u = _arrays(*run)
    base_i, base_u = _arrays(*baseline)
    if run_i.shape[1] != base_i.shape[1]:
        raise ValueError(f"run has {run_i.shape[1]} classes, baseline {base_i.shape[1]}")
    if paired and len(run_i) != len(base_i):
        raise ValueError(f"paired bootstrap needs the same images; got {len(run_i)} and {len(base_i)}")
    rng = np.random.default_rng(seed)
    run_counts = _counts(rng, len(run_i), resamples)
    base_counts = run_counts if paired else _counts(rng, len(base_i), resamples)
    draws = (score(run_counts @ run_i, run_counts @ run_u, statistic)
             - score(base_counts @ base_i, base_counts @ base_u, statistic))
    estimate = float(score(run_i.sum(0), run_u.sum(0), statistic) - score(base_i.sum(0), base_u.sum(0), statistic))
    kept = draws[~np.isnan(draws)]
    p_value = float(min(1.0, 2 * min((kept <= 0).mean(), (kept >= 0).mean()))) if kept.size else float("nan")
    return Difference.of(estimate, draws, level, resamples, paired=paired, p_value=p_value)
