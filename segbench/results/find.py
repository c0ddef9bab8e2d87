"""Where results come from: results.json files and folders, MLflow runs (by id or the latest of a suite).

Shared by the report and the gate. Reading never creates anything: a local MLflow store that does not
exist is a UserError, not a new empty ``mlflow.db``.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from segbench.config.schema import TrackingConfig, resource_dir
from segbench.errors import UserError
from segbench.results.schema import RESULTS_NAME, Results, read_results
from segbench.results.tracking import PARENT_TAG, check_store, client_uri, tracking_uri

RUN_ID = re.compile(r"[0-9a-f]{32}")
RESULTS_KINDS = ("run", "score")  # parent runs whose artifact is a results.json


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
    """The MLflow store to read: ``uri``, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db; it must exist
    (and a server or database answer within tracking's connect timeout)."""
    uri = tracking_uri(TrackingConfig(uri=uri))
    local = _local_store(uri)
    if local is not None and not local.exists():
        raise UserError(f"no MLflow store at {uri} ({local.resolve()} does not exist): run `segbench run` first, "
                        "name results.json files, or point --tracking-uri at a store")
    if local is None:  # a server or database: it answers within seconds, or one line says so
        check_store(uri)
    return uri


def store_client(uri: str | None = None):
    """An ``MlflowClient`` of the store ``store_uri(uri)`` names."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=client_uri(store_uri(uri)))


def mlflow_results(run_id: str, uri: str | None = None) -> Results:
    """The results.json logged with an MLflow run (a model's child run points to its parent's)."""
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no progress bar
    client = store_client(uri)
    try:
        run = client.get_run(run_id)
        parent = run.data.tags.get(PARENT_TAG, run_id)
        with tempfile.TemporaryDirectory() as tmp:
            return read_results(client.download_artifacts(parent, RESULTS_NAME, tmp))
    except MlflowException as exc:
        raise UserError(f"MLflow run {run_id} at {client.tracking_uri}: {exc.message.splitlines()[0]}") from None


def latest_run(suite: str | None, uri: str | None = None) -> str:
    """The id of the newest finished ``segbench run`` of ``suite`` (of any suite when None) in the tracking store."""
    client = store_client(uri)
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
    return read_results(bundled(Path(text))), text


def bundled(path: Path) -> Path:
    """``path``, or, for a ``baselines/NAME.json`` that is not here (outside a clone), the baseline installed with
    segbench (``segbench/_resources/baselines``, a clone's ``baselines/``)."""
    if path.exists() or path.parts[:1] != ("baselines",) or len(path.parts) != 2:
        return path
    try:
        installed = resource_dir("baselines") / path.name
    except UserError:
        return path
    return installed if installed.is_file() else path


@dataclass
class StoredRun:
    """A ``segbench run`` or ``segbench score`` invocation in the tracking store (its parent run)."""

    run_id: str
    suite: str
    status: str  # FINISHED, FAILED, KILLED or RUNNING
    start_time: float  # seconds since the epoch


def stored_runs(client) -> list[StoredRun]:
    """Every parent run in ``client``'s store that writes a results.json (run, score), oldest first."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs, token = [], None
    while experiments:
        page = client.search_runs(experiments, "tags.`segbench.kind` != 'bench'", max_results=1000,
                                  page_token=token)
        runs += [StoredRun(run.info.run_id, run.data.tags.get("segbench.suite", "?"), run.info.status,
                           (run.info.start_time or 0) / 1000) for run in page
                 if run.data.tags.get("segbench.kind") in RESULTS_KINDS and PARENT_TAG not in run.data.tags]
        token = page.token
        if not token:
            break
    return sorted(runs, key=lambda run: run.start_time)


def download_artifact(client, run_id: str, name: str, folder: Path) -> Path | None:
    """The top-level artifact ``name`` of MLflow run ``run_id`` copied into ``folder``; None when it has none."""
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if name not in {item.path for item in client.list_artifacts(run_id)}:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(run_id, name, str(folder)))
    except MlflowException as exc:
        raise UserError(f"MLflow run {run_id} at {client.tracking_uri}: {exc.message.splitlines()[0]}") from None
