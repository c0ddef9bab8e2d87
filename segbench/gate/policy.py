"""What the gate allows: tolerances, how speed is compared, the statistics of the tests (one typed policy)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from segbench.errors import UserError, closest
from segbench.metrics.confusion import REGISTRY
from segbench.metrics.statistics import LEVEL, RESAMPLES

MAX_DROP_POINTS = {"mIoU": 0.5}
MAX_SPEED_DROP_PERCENT = 20.0


@dataclass(frozen=True)
class GatePolicy:
    """The gate's settings. Quality tolerances are in percentage points (``{"mIoU": 0.5}`` allows 71.20 % to
    fall to 70.70 %); the speed tolerance is in percent of the baseline's images/s or of its ratio to a reference
    model timed in the same run (None: speed not gated)."""

    max_drop_points: dict[str, float] = field(default_factory=lambda: dict(MAX_DROP_POINTS))
    max_speed_drop_percent: float | None = MAX_SPEED_DROP_PERCENT
    reference_model: str | None = None  # speed as a ratio to this model; None: chosen (see segbench.gate.speed)
    absolute_speed: bool = False  # raw images/s of run and baseline, which two processes on a machine rarely share
    require_significant: bool = False  # quality: a drop must also be significant by the bootstrap
    level: float = LEVEL  # confidence level of the bootstrap intervals
    resamples: int = RESAMPLES
    seed: int = 0
    max_backend_diff_points: dict[str, float] | None = None  # every backend of the run within POINTS of eager

    def __post_init__(self) -> None:
        if self.max_speed_drop_percent == 100:  # every drop allowed: speed not gated
            object.__setattr__(self, "max_speed_drop_percent", None)
        self.check()

    def check(self) -> None:
        """Refuse settings that make no sense (UserError), before any results are read."""
        _check_tolerances(self.max_drop_points)
        _check_tolerances(self.max_backend_diff_points or {})
        speed = self.max_speed_drop_percent
        if speed is not None and not 0 <= speed <= 100:
            raise UserError(f"--max-speed-drop must be a percentage in [0, 100], got {speed}")
        if not 0 < self.level < 1:
            raise UserError(f"confidence level must be in (0, 1), got {self.level}")
        if self.absolute_speed and self.reference_model:
            raise UserError("--absolute-speed and --reference-model exclude each other: speed is compared either "
                            "as raw images/s or as a ratio to the reference")

    def to_dict(self) -> dict:
        return asdict(self)


def check_metric_names(names, defined=()) -> None:
    """Refuse a metric that neither the registry (segbench's and installed plugins') nor the results' own
    ``metric_definitions`` (a user's metric) know, naming the closest ones."""
    known = list(REGISTRY) + [name for name in defined if name not in REGISTRY]
    for metric in names:
        if metric not in known:
            hints = closest(metric, known)
            raise UserError(f"no quality metric '{metric}'" + (f"; did you mean '{hints[0]}'?" if hints else "")
                            + f" (one of {', '.join(known)}; see `segbench list metrics`)")


def _check_tolerances(tolerances: dict[str, float]) -> None:
    for metric, tolerance in tolerances.items():
        if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
            raise UserError(f"tolerance for {metric} must be a non-negative number of points, got {tolerance}")


def parse_max_drops(items: list[str], defaults: dict[str, float] | None = None) -> dict[str, float]:
    """``["mIoU=0.5", "mDice=1"]`` (percentage points) merged over ``defaults`` (MAX_DROP_POINTS when None); a
    malformed item is a UserError."""
    drops = dict(MAX_DROP_POINTS if defaults is None else defaults)
    for item in items:
        metric, _, value = item.partition("=")
        try:
            drops[metric.strip()] = float(value)
        except ValueError:
            raise UserError(f"expected METRIC=POINTS such as mIoU=0.5, got '{item}'") from None
    return drops
