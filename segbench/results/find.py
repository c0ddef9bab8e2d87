"""Where results come from: results.json files and folders, MLflow runs (by id or the latest of a suite).

Shared by the report and the gate. Reading never creates anything: a local MLflow store that does not
exist is a UserError, not a new empty ``mlflow.db``.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from segbench.config.schema import TrackingConfig
from segbench.errors import UserError
from segbench.results.schema import RESULTS_NAME, Results, read_results
from segbench.results.tracking import PARENT_TAG, tracking_uri

RUN_ID = re.compile(r"[0-9a-f]{32}")


def find_results(source: Path | str) -> list[Path]:
    """A results.json file as is; a folder searched recursively for results.json files."""
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(path.rglob(RESULTS_NAME))
        if not found:
            raise UserError(f"no {RESULTS_NAME} under {path}")
        return found
    raise UserError(f"no such file or folder: {path}")


def _local_store(uri: str) -> Path | None:
    """The file or folder of a local MLflow store (sqlite or file), None for a server or database."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return Path(unquote(uri[len("sqlite:///"):])) if uri.startswith("sqlite:///") else None
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else uri)
    return None


def store_uri(uri: str | None = None) -> str:
    """The MLflow store to read: ``uri``, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db; it must exist."""
    uri = tracking_uri(TrackingConfig(uri=uri))
    local = _local_store(uri)
    if local is not None and not local.exists():
        raise UserError(f"no MLflow store at {uri} ({local.resolve()} does not exist): run `segbench run` first, "
                        "name results.json files, or point --tracking-uri at a store")
    return uri


def _client(uri: str | None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store_uri(uri))


def mlflow_results(run_id: str, uri: str | None = None) -> Results:
    """The results.json logged with an MLflow run (a model's child run points to its parent's)."""
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no progress bar
    client = _client(uri)
    try:
        run = client.get_run(run_id)
        parent = run.data.tags.get(PARENT_TAG, run_id)
        with tempfile.TemporaryDirectory() as tmp:
            return read_results(client.download_artifacts(parent, RESULTS_NAME, tmp))
    except MlflowException as exc:
        raise UserError(f"MLflow run {run_id} at {client.tracking_uri}: {exc.message.splitlines()[0]}") from None


def latest_run(suite: str | None, uri: str | None = None) -> str:
    """The id of the newest finished ``segbench run`` of ``suite`` (of any suite when None) in the tracking store."""
    client = _client(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    query = "tags.`segbench.kind` = 'run' and attributes.status = 'FINISHED'"
    query += f" and tags.`segbench.suite` = '{suite}'" if suite is not None else ""
    runs = client.search_runs(experiments, query, order_by=["attributes.start_time DESC"],
                              max_results=1) if experiments else []
    if not runs:
        raise UserError(f"no finished run of {'any suite' if suite is None else f'suite {suite!r}'} in MLflow at "
                        f"{client.tracking_uri}")
    return runs[0].info.run_id


def load_results(source: Path | str, uri: str | None = None, suite: str | None = None) -> tuple[Results, str]:
    """Results and a label for them from a results.json path or folder, an MLflow run id or ``latest``."""
    text = str(source)
    if text == "latest":  # the newest finished run of ``suite`` (of any suite when None)
        run_id = latest_run(suite, uri)
        return mlflow_results(run_id, uri), f"MLflow run {run_id}"
    if RUN_ID.fullmatch(text) and not Path(text).exists():
        return mlflow_results(text, uri), f"MLflow run {text}"
    return read_results(source), text


def mlflow_frame(uri: str | None = None) -> pd.DataFrame:
    """``mlflow.search_runs`` of every model's child run, with its parent's tags and params as ``parent.*``."""
    import mlflow

    store = store_uri(uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store)
    try:
        frame = mlflow.search_runs(search_all_experiments=True)
    finally:
        mlflow.set_tracking_uri(previous)
    if frame.empty or f"tags.{PARENT_TAG}" not in frame or "tags.segbench.kind" not in frame:
        return pd.DataFrame()
    parents = frame[frame["tags.segbench.kind"] == "run"].set_index("run_id").add_prefix("parent.")
    children = frame[frame[f"tags.{PARENT_TAG}"].isin(parents.index)]
    return children.join(parents, on=f"tags.{PARENT_TAG}")
