"""MLflow tracking: one experiment per suite, a parent run per invocation, a child run per model."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from segbench.config import TrackingConfig

DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_TAG = "mlflow.parentRunId"


def tracking_uri(cfg: TrackingConfig) -> str:
    """``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else a sqlite file in the working directory."""
    return cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


class Tracker:
    """A thin, explicit wrapper over ``MlflowClient``; every method is a no-op when tracking is off."""

    def __init__(self, cfg: TrackingConfig, experiment: str) -> None:
        self.uri = tracking_uri(cfg) if cfg.enabled else None
        self.client = None
        self.experiment_id: str | None = None
        self._open: list[str] = []
        if not cfg.enabled:
            return
        for noisy in ("alembic", "mlflow.store.db.utils"):  # schema-migration chatter on a new store
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)

    def start(self, name: str, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
              parent: str | None = None) -> str | None:
        """Open a run (a child of ``parent`` if given) and return its id."""
        if self.client is None:
            return None
        tags = dict(tags or {})
        if parent:
            tags[PARENT_TAG] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        self._open.append(run_id)
        if params:
            self.log(run_id, params=params)
        return run_id

    def log(self, run_id: str | None, metrics: dict[str, float] | None = None,
            params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
            series: dict[str, list[float]] | None = None) -> None:
        """Log metrics, params, tags and metric series (value per step) in batched calls."""
        if self.client is None or run_id is None:
            return
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v == v]  # drop NaN
        for key, values in (series or {}).items():
            entries += [Metric(key, float(v), now, step) for step, v in enumerate(values)]
        param_list = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, max(len(entries), 1), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(run_id, metrics=entries[i:i + 1000],
                                  params=param_list if i == 0 else [], tags=tag_list if i == 0 else [])

    def artifact(self, run_id: str | None, path: Path) -> None:
        if self.client is not None and run_id is not None:
            self.client.log_artifact(run_id, str(path))

    def end(self, run_id: str | None, status: str = "FINISHED") -> None:
        """Close a run with FINISHED, FAILED or KILLED."""
        if self.client is not None and run_id is not None and run_id in self._open:
            self.client.set_terminated(run_id, status=status)
            self._open.remove(run_id)

    def end_all(self, status: str) -> None:
        """Close every run still open (children first), e.g. KILLED after Ctrl-C."""
        for run_id in reversed(list(self._open)):
            self.end(run_id, status)
