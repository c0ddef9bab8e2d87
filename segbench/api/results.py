"""Results in a notebook: the typed results (``segbench.results.schema.Results``) with the report's figures
(``plot_pareto``, ``plot_confusion``), and ``read_results``, ``gate`` and ``report``, which return what
``segbench gate`` prints and what ``segbench report`` writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from segbench.errors import UserError
from segbench.results import schema

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


class Results(schema.Results):
    """A run's results as results.json holds them, typed, with tables (``leaderboard``, ``per_class``, ``speed``,
    ``robustness``), confusion matrices (``confusion``) and the report's figures (``plot_pareto``,
    ``plot_confusion``)."""

    def _rows(self) -> pd.DataFrame:
        import pandas as pd

        from segbench.report.rows import labels, model_rows

        frame = pd.DataFrame(model_rows(self, "results", folder=Path()))
        return frame.assign(label=labels(frame)) if len(frame) else frame

    def plot_pareto(self) -> Figure:
        """The report's speed plot: images/s against mIoU, Pareto front highlighted, with each model's mIoU
        interval (a matplotlib ``Figure``). A UserError when no model has both (time them with
        ``bench.enabled=true``)."""
        from segbench.report.plots import pareto_figure

        figure = pareto_figure(self._rows()) if self.models else None
        if figure is None:
            raise UserError("plot_pareto: no model has both an mIoU and a speed; time them with "
                            "overrides=['bench.enabled=true']")
        return figure

    def plot_confusion(self, model: str | None = None) -> Figure:
        """The report's confusion-matrix plot of ``model`` (the only model when None), normalised per
        ground-truth row (a matplotlib ``Figure``)."""
        from segbench.report.plots import confusion_figure

        record = self.model_record(model)
        classes = self.dataset.classes if self.dataset else []
        return confusion_figure(self.confusion(record.name), classes, record.name)


def typed(results: schema.Results) -> Results:
    """``results`` as the API's Results (the same records, not copied nor validated again)."""
    return Results.model_validate({**dict(results), **(results.model_extra or {})})


def read_results(path: str | Path) -> Results:
    """Read a results.json (or the one in a folder), as ``segbench report`` and ``segbench gate`` read it."""
    if not isinstance(path, (str, Path)):
        raise UserError(f"read_results: expected the path of a results.json or its folder, got {type(path).__name__}")
    return typed(schema.read_results(path))


@dataclass(frozen=True)
class Verdict:
    """What ``segbench gate`` decides: ``passed``, its exit code, the checks (one row per model and check, numbers
    in percent and points) and the text it prints (``str(verdict)``)."""

    passed: bool
    exit_code: int
    checks: pd.DataFrame
    text: str
    notes: tuple[str, ...]

    def __str__(self) -> str:
        return self.text


def gate(run: str | Path, baseline: str | Path, max_drop: dict[str, float] | None = None,
         max_speed_drop: float = 20.0, reference_model: str | None = None, absolute_speed: bool = False,
         require_significant: bool = False, tracking_uri: str | None = None) -> Verdict:
    """Compare a run with a baseline as ``segbench gate RUN BASELINE`` does (``max_drop``: metric -> allowed drop
    in percentage points, default mIoU 0.5); the verdict holds the text the command prints."""
    from segbench.core.plugins import load_entry_points
    from segbench.gate.compare import GatePolicy, parse_max_drops
    from segbench.gate.compare import gate as run_gate
    from segbench.gate.render import text

    for name, value in (("run", run), ("baseline", baseline)):
        if not isinstance(value, (str, Path)):
            raise UserError(f"gate: {name}: expected a results.json path, its folder, an MLflow run id or 'latest', "
                            f"got {type(value).__name__}")
    if max_drop is not None and not isinstance(max_drop, dict):
        raise UserError(f"gate: max_drop: expected a dict of metric -> points, e.g. {{'mIoU': 0.5}}, got "
                        f"{type(max_drop).__name__}")
    load_entry_points()
    drops = parse_max_drops([f"{k}={v}" for k, v in max_drop.items()] if max_drop else [])
    policy = GatePolicy(max_drop_points=drops, max_speed_drop_percent=max_speed_drop, reference_model=reference_model,
                        absolute_speed=absolute_speed, require_significant=require_significant)
    result = run_gate(str(run), str(baseline), policy, tracking_uri)
    return Verdict(result.passed, result.exit_code, result.checks, text(result), tuple(result.notes))


def report(sources: Sequence[str | Path], out: str | Path | None = None, tracking_uri: str | None = None) -> list[Path]:
    """Write the leaderboards of ``sources`` (results.json files or folders) as ``segbench report`` does, into
    ``out`` (default reports/); return the files written."""
    from segbench.report.build import build_report

    if isinstance(sources, (str, Path)):
        sources = [sources]
    if not all(isinstance(source, (str, Path)) for source in sources):
        raise UserError("report: sources: expected results.json paths or folders")
    return build_report(list(sources), out, tracking_uri, use_mlflow=not sources).written
