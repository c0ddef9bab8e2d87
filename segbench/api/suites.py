"""``segbench.run`` and ``segbench.bench``: what the CLI does, from Python, writing the same results.json and MLflow
runs and returning the typed results (``segbench.api.results.Results``: tables, confusion matrices, figures). A
user's mistake raises ``segbench.UserError`` with the CLI's one-line message; never SystemExit."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segbench.api.results import Results


def _overrides(suite: str | Path, overrides: Sequence[str]) -> list[str]:
    from segbench.api.evaluate import overrides_of

    return overrides_of(suite, overrides)


def _results(path: Path | None) -> Results | None:
    from segbench.api.results import read_results

    return read_results(path) if path is not None else None


def run(suite: str | Path = "synthetic", overrides: Sequence[str] = ()) -> Results | None:
    """Train, evaluate and time every model of ``suite`` as ``segbench run`` does (its results.json and MLflow
    runs included); return its results (None on the other ranks of a torchrun job, which write nothing)."""
    from segbench.api.evaluate import exits_reported
    from segbench.api.results import typed
    from segbench.pipeline.runner import run_suite
    from segbench.pipeline.validation import load_config

    with exits_reported("segbench.run: user code (a plugin or imports: module)", "during the run"):
        results, _ = run_suite(load_config(_overrides(suite, overrides)))
    return typed(results) if results is not None else None


def bench(suite: str | Path = "synthetic", overrides: Sequence[str] = ()) -> Results | None:
    """Time every model of ``suite`` as ``segbench bench`` does; return its results."""
    from segbench.api.evaluate import exits_reported
    from segbench.pipeline.runner import bench as bench_suite
    from segbench.pipeline.validation import load_config

    with exits_reported("segbench.bench: user code (a plugin or imports: module)", "while timing"):
        return _results(bench_suite(load_config(_overrides(suite, overrides))))
