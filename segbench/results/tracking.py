"""MLflow tracking: one experiment per suite, a parent run per invocation, a child run per model.

``check_store`` proves a store usable before a run creates anything: a tracking server answers within a
few seconds, a database accepts connections, and a new sqlite file gets its schema migrated under a lock
into a temporary file that is renamed into place, so runs started together, or interrupted during the
set-up, never see a half-migrated store.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from segbench.config.schema import TrackingConfig
from segbench.errors import NotLogged, UserError

DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_TAG = "mlflow.parentRunId"
HOST_TAG, PID_TAG = "segbench.host", "segbench.pid"  # who opened a run: a run of a dead process is closed KILLED
CONNECT_TIMEOUT_S = 5.0
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
LOCKED_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0)  # back-off, in seconds, while another writer holds the sqlite lock
# MLflow's HTTP calls, bounded (its defaults retry for minutes): at most 3 tries of 5 s each, 2 s apart, so one call
# to a server that died gives up within about 17 s (2 s if the port refuses). Variables already set are kept.
# And MLflow does not print a "View run" link for every run it closes: segbench's stdout is its own.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
               "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
T = TypeVar("T")


def tracking_uri(cfg: TrackingConfig) -> str:
    """``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else a sqlite file in the working directory. Whoever asks
    is about to talk to the store: MLflow's HTTP calls of this process get their bounds (``HTTP_LIMITS``)."""
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)
    return cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def client_uri(uri: str) -> str:
    """The address an MLflow client of this process opens for ``uri``: a sqlite file named relative to the working
    folder (the default ``sqlite:///mlflow.db``) made absolute. MLflow caches stores and database engines under the
    address as written for the life of the process, so a relative one would stay bound to the folder of its first
    use: a notebook that changes folder would log into the first folder's store."""
    if not uri.startswith("sqlite:///"):
        return uri
    path, _, query = uri[len("sqlite:///"):].partition("?")
    if not path or path == ":memory:" or Path(path).expanduser().is_absolute():
        return uri
    return "sqlite:///" + str(Path(path).expanduser().resolve()) + (f"?{query}" if query else "")


def artifact_root(uri: str) -> str | None:
    """Where a new experiment of a sqlite store keeps its artifacts: ``mlruns`` beside the database file (MLflow's
    default is ``./mlruns`` in the working folder, wherever the store is); None: the store decides."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite" or not parsed.path or parsed.path == "/:memory:":
        return None
    database = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else Path(parsed.path)
    return (database.resolve().parent / "mlruns").as_uri()


def check_store(uri: str) -> None:
    """Raise a UserError unless the MLflow store at ``uri`` is reachable and its schema ready (a new sqlite
    store is created and migrated here, safely under concurrency)."""
    scheme = urlparse(uri).scheme.split("+")[0].lower()
    if scheme in ("http", "https"):
        _check_server(uri)
    elif scheme == "sqlite":
        _prepare_sqlite(uri)
    elif scheme in DATABASE_SCHEMES:
        _check_database(uri)
    elif scheme in ("", "file"):
        folder = Path(urlparse(uri).path if scheme else uri).expanduser()
        if not _writable_folder(folder):
            raise UserError(f"tracking.uri: cannot write the MLflow file store '{folder}'")
    elif scheme != "databricks":
        raise UserError(f"tracking.uri: unsupported scheme '{scheme}' in '{uri}'; expected sqlite:///FILE, "
                        "http(s)://HOST:PORT (an MLflow server), postgresql://..., or a folder")


def _check_server(uri: str) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"tracking.uri: no MLflow server answers at {uri} within {CONNECT_TIMEOUT_S:g} s "
                        f"({reason}); start it, or run with tracking.enabled=false") from None
    if status != 200:
        raise UserError(f"tracking.uri: {url} answered HTTP {status}; expected an MLflow tracking server")


def _check_database(uri: str) -> None:
    import sqlalchemy

    args = {"connect_timeout": int(CONNECT_TIMEOUT_S)} if uri.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args)
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as exc:
        raise UserError(f"tracking.uri: the database driver '{exc.name}' for '{uri.split(':')[0]}' is not "
                        f"installed (pip install {exc.name})") from None
    except Exception as exc:  # any driver's connection error
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"tracking.uri: cannot connect to the database {_hide_password(uri)}: {first}") from None


def _hide_password(uri: str) -> str:
    parsed = urlparse(uri)
    return uri.replace(f":{parsed.password}@", ":***@") if parsed.password else uri


def _writable_folder(folder: Path) -> bool:
    """Whether ``folder`` exists (or can be created) and files can be created in it."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def _sqlite_path(uri: str) -> Path:
    path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        raise UserError(f"tracking.uri: '{uri}' keeps nothing; name a file, e.g. sqlite:///mlflow.db")
    return Path(path.split("?", 1)[0]).expanduser()


def _prepare_sqlite(uri: str) -> None:
    path = _sqlite_path(uri)
    folder = path.parent.resolve() if path.parent.exists() else path.parent
    if not folder.is_dir():
        raise UserError(f"tracking.uri: the folder '{path.parent}' of the sqlite store does not exist")
    if path.exists():
        _verify_sqlite(path)
        _check_writable(path)
        return
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"tracking.uri: cannot create the sqlite store '{path}': folder '{folder}' is not writable")
    lock = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # runs that start together migrate one at a time
        if path.exists():
            _verify_sqlite(path)
            return
        tmp = folder / f".{path.name}.{os.getpid()}.migrating"
        try:
            _migrate(tmp)
            os.replace(tmp, path)  # atomic: the store appears complete or not at all
        finally:
            with suppress(FileNotFoundError):
                tmp.unlink()
    finally:
        os.close(lock)


def _check_writable(path: Path) -> None:
    """Raise a UserError unless sqlite can write ``path`` (the file, and its folder for the journal)."""
    for what, where, mode in (("file", path, os.W_OK), ("folder", path.parent, os.W_OK | os.X_OK)):
        if not os.access(where, mode):
            raise UserError(f"tracking.uri: the sqlite store '{path}' cannot be written (its {what} '{where}' is "
                            "read-only); make it writable, point tracking.uri at another store, or run with "
                            "tracking.enabled=false")


def _migrate(path: Path) -> None:
    """Create MLflow's schema in a new sqlite file."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    _quiet_migrations()
    store = SqlAlchemyStore(f"sqlite:///{path}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
    store.engine.dispose()


def _verify_sqlite(path: Path) -> None:
    """Raise a UserError unless ``path`` is an MLflow sqlite store at the installed MLflow's schema."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    if not path.is_file():
        raise UserError(f"tracking.uri: '{path}' is not a file")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=20) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            version = next(iter(db.execute("SELECT version_num FROM alembic_version")), [None])[0] \
                if "alembic_version" in tables else None
    except sqlite3.Error as exc:
        raise UserError(f"tracking.uri: '{path}' is not a readable sqlite database ({exc})") from None
    expected = _get_latest_schema_revision()
    if version != expected:
        raise UserError(f"tracking.uri: '{path}' is not an MLflow store at this MLflow's schema (found revision "
                        f"{version}, expected {expected}); if a run was interrupted while creating it, move it away; "
                        f"if it comes from an older MLflow, run: mlflow db upgrade sqlite:///{path}")


def _quiet_migrations() -> None:
    for noisy in ("alembic", "mlflow.store.db.utils", "mlflow.store.db.db_types"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _locked(error: Exception) -> bool:
    return "database is locked" in str(error)


def retry_locked(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, retried with back-off while a sqlite store is locked by another writer."""
    for delay in LOCKED_RETRIES:
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # MlflowException or sqlalchemy's OperationalError
            if not _locked(exc):
                raise
            time.sleep(delay)
    return call(*args, **kwargs)


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "message", "") or error) or type(error).__name__
    return text.strip().splitlines()[0][:200] if text.strip() else type(error).__name__


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class Tracker:
    """A thin, explicit wrapper over ``MlflowClient``; every method is a no-op when tracking is off.

    The store must have passed ``check_store`` first. Tracking never stops a command: every call is bounded
    (``HTTP_LIMITS``, ``LOCKED_RETRIES``); the first call that fails marks the store lost, later calls are skipped
    and counted, and ``lost`` says what happened, so that the command can finish, write its results and say what
    MLflow is missing (``segbench log`` sends it later)."""

    def __init__(self, cfg: TrackingConfig, experiment: str, connect: bool = True) -> None:
        self.uri = tracking_uri(cfg) if cfg.enabled else None
        self.experiment = experiment
        self.client = None
        self.experiment_id: str | None = None
        self.lost: str | None = None  # the first failure: what was being logged and why it failed
        self.skipped = 0  # tracking calls not made since
        self._open: list[str] = []
        if connect:
            self.connect()

    def _guard(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``call(*args, **kwargs)``, or None once the store is lost (this call failing loses it)."""
        if self.lost is not None:
            self.skipped += 1
            return None
        try:
            return retry_locked(call, *args, **kwargs)
        except Exception as exc:  # any failure of the store: connection, timeout, disk, server error
            self.lost = f"{what} failed: {type(exc).__name__}: {_first_line(exc)}"
            return None

    def connect(self) -> None:
        """Open the client and find or create the experiment (nothing when tracking is off)."""
        if self.uri is None or self.client is not None:
            return
        _quiet_migrations()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=client_uri(self.uri))
        self.experiment_id = self._guard(f"opening experiment '{self.experiment}'", self._experiment,
                                         self.experiment)
        if self.experiment_id is not None:
            self._guard("marking runs of dead processes KILLED", self.close_stale)

    def _experiment(self, name: str) -> str:
        """The id of experiment ``name``, created if needed (another run may create it at the same moment)."""
        from mlflow.exceptions import MlflowException

        found = retry_locked(self.client.get_experiment_by_name, name)
        if found:
            return found.experiment_id
        try:
            return retry_locked(self.client.create_experiment, name, artifact_location=artifact_root(self.uri))
        except MlflowException:
            found = retry_locked(self.client.get_experiment_by_name, name)
            if found is None:
                raise
            return found.experiment_id

    def close_stale(self) -> list[str]:
        """Mark KILLED the RUNNING runs of this experiment that a segbench process of this machine opened and that
        process is gone (killed -9, power cut); return their ids. Runs of other machines are left alone."""
        runs = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING' and "
                                                             f"tags.`{HOST_TAG}` = '{socket.gethostname()}'")
        stale = [r.info.run_id for r in runs
                 if r.data.tags.get(PID_TAG, "").isdigit() and not _alive(int(r.data.tags[PID_TAG]))]
        for run_id in stale:
            retry_locked(self.client.set_terminated, run_id, status="KILLED")
        return stale

    def start(self, name: str, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
              parent: str | None = None, run_id: str | None = None) -> str | None:
        """Open a run (a child of ``parent`` if given) and return its id; ``run_id``: reopen that run instead
        (``segbench log``)."""
        if self.client is None:
            return None
        if self.experiment_id is None:  # the store was lost before the experiment was found
            self.skipped += 1
            return None
        tags = dict(tags or {}) | {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
        if parent:
            tags[PARENT_TAG] = parent
        if run_id is None:
            run = self._guard(f"creating run '{name}'", self.client.create_run, self.experiment_id, run_name=name,
                              tags=tags)
            if run is None:
                return None
            run_id = run.info.run_id
        else:
            self._guard(f"reopening run {run_id}", self.client.update_run, run_id, status="RUNNING")
            self.log(run_id, tags=tags)
        self._open.append(run_id)
        if params:
            self.log(run_id, params=params)
        return run_id

    def log(self, run_id: str | None, metrics: dict[str, float] | None = None,
            params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
            series: dict[str, list[float] | dict[int, float]] | None = None) -> None:
        """Log metrics, params, tags and metric series (value per step) in batched calls."""
        if self.client is None or run_id is None:
            return
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v == v]  # drop NaN
        for key, values in (series or {}).items():
            steps = values.items() if isinstance(values, dict) else enumerate(values)  # {step: value} or a list
            entries += [Metric(key, float(v), now, step) for step, v in steps]
        param_list = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, max(len(entries), 1), 1000):  # MLflow takes at most 1000 metrics per batch
            self._guard(f"logging to run {run_id}", self.client.log_batch, run_id, metrics=entries[i:i + 1000],
                        params=param_list if i == 0 else [], tags=tag_list if i == 0 else [])

    def artifact(self, run_id: str | None, path: Path) -> None:
        if self.client is not None and run_id is not None:
            self._guard(f"uploading {path.name} to run {run_id}", self.client.log_artifact, run_id, str(path))

    def end(self, run_id: str | None, status: str = "FINISHED") -> None:
        """Close a run with FINISHED, FAILED or KILLED."""
        if self.client is not None and run_id is not None and run_id in self._open:
            self._guard(f"closing run {run_id}", self.client.set_terminated, run_id, status=status)
            self._open.remove(run_id)

    def end_all(self, status: str) -> None:
        """Close every run still open (children first), e.g. KILLED after Ctrl-C."""
        for run_id in reversed(list(self._open)):
            self.end(run_id, status)

    def check_logged(self, path: Path | None) -> None:
        """Raise NotLogged, naming what MLflow misses and how to send it, if the store was lost on the way."""
        if self.lost is None or path is None:
            return
        raise NotLogged(path, f"MLflow at {self.uri}: {self.lost}; {self.skipped} later tracking calls were "
                              f"skipped, so its runs are incomplete. The results are complete in {path}; send them "
                              f"with: segbench log {path.parent}")
