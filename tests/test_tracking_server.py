"""A team's tracking server: a real PostgreSQL and an ``mlflow server`` on the loopback address, with two
``segbench run``s logging to it at once (the sqlite version of this check is in test_robustness.py).

One PostgreSQL cluster and one server serve the whole module. The test is skipped, naming what is missing, where
PostgreSQL's server binaries, a PostgreSQL driver for SQLAlchemy or a working ``mlflow server`` are not here;
``.ci/run`` installs them where it can. All traffic stays on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_failures import TINY

HOST = "127.0.0.1"
SERVER_START_S = 90  # the server runs MLflow's schema migrations on an empty database first (about 10 s here)
RUNS_S = 400  # tiny runs sharing two cores with the rest of the suite
POSTGRES_USER = "postgres"  # initdb and pg_ctl refuse to run as root: as root, they run as this user
LOCAL = {"NO_PROXY": f"{HOST},localhost", "no_proxy": f"{HOST},localhost"}  # never through a proxy


def _postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL server binaries (/usr/lib/postgresql/VERSION/bin), else initdb on the PATH."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found.sort(key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0)
    if found and (found[-1] / "pg_ctl").is_file():
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb and shutil.which("pg_ctl") else None


def _driver() -> str | None:
    """SQLAlchemy's dialect+driver for the installed PostgreSQL driver. Named explicitly: a bare postgresql://
    means psycopg2 to SQLAlchemy 2.0 but psycopg (3) to SQLAlchemy 2.1."""
    for module, dialect in (("psycopg2", "postgresql+psycopg2"), ("psycopg", "postgresql+psycopg")):
        try:
            __import__(module)
        except ImportError:
            continue
        return dialect
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _server_env() -> dict[str, str]:
    """The environment of an ``mlflow server``: none of this process's MLflow settings, and no job execution: MLflow 3
    would start a job runner and seven huey consumer processes beside the server for features segbench never uses
    (~14 s of CPU per start, measured in a cgroup; /usr/bin/time misses it, the consumers die as orphans)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | LOCAL | {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Cluster:
    """A throw-away PostgreSQL cluster in ``base``, run as the postgres user when we are root."""

    def __init__(self, bindir: Path, base: Path) -> None:
        self.bindir, self.base = bindir, base
        self.data, self.log = base / "pgdata", base / "postgres.log"
        self.port: int | None = None
        self.started = False

    def _as_owner(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", POSTGRES_USER, "--", *command]
        return subprocess.run(command, cwd=self.base, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    def start(self) -> str | None:
        """Create the cluster, start it on a free loopback port and create a database; None, else why not."""
        done = self._as_owner("initdb", "-D", str(self.data), "-U", POSTGRES_USER, "--auth=trust", "--no-locale",
                              "-E", "UTF8", "--no-sync")
        if done.returncode != 0:
            return f"initdb failed: {(done.stdout + done.stderr).strip()[-1500:]}"
        self.port = _free_port()
        options = f"-h {HOST} -p {self.port} -k {self.base} -c fsync=off -c full_page_writes=off"
        done = self._as_owner("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                              "start")
        self.started = True  # stop() is harmless if it did not start
        if done.returncode != 0:
            return f"pg_ctl start failed: {(done.stdout + done.stderr).strip()[-500:]}\n{_tail(self.log)}"
        done = subprocess.run([str(self.bindir / "createdb"), "-h", HOST, "-p", str(self.port), "-U",
                               POSTGRES_USER, "mlflow"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, env=os.environ | LOCAL)
        if done.returncode != 0:
            return f"createdb failed: {(done.stdout + done.stderr).strip()[-1500:]}"
        return None

    def stop(self) -> None:
        """Stop the cluster: fast (disconnect clients), else immediate."""
        if not self.started:
            return
        for mode in ("fast", "immediate"):
            try:
                self._as_owner("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", timeout=90)
            except subprocess.TimeoutExpired:
                continue
            if not (self.data / "postmaster.pid").exists():
                return


def _stop_server(server: subprocess.Popen) -> None:
    """Stop ``mlflow server`` and its workers (its own process group) with SIGTERM, then SIGKILL."""
    for signum, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, signum)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def tracking_server() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of an ``mlflow server`` on a fresh PostgreSQL database, artifacts proxied to a
    temporary folder; everything stopped and removed afterwards, also on failure."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed (apt-get install postgresql)")
    driver = _driver()
    if driver is None:
        pytest.skip("no PostgreSQL driver for SQLAlchemy is installed (pip install psycopg2-binary)")
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            pytest.skip(f"running as root and there is no '{POSTGRES_USER}' user to run initdb as (it refuses root)")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser (util-linux) is missing: initdb cannot run as another user")
    # A short path under /tmp: the postgres user must reach it, and a unix socket path is at most 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="segbench-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    cluster = _Cluster(bindir, base)
    server = None
    try:
        problem = cluster.start()
        if problem:
            pytest.skip(f"PostgreSQL could not be started: {problem}")
        port = _free_port()
        url = f"http://{HOST}:{port}"
        log = base / "mlflow-server.log"
        with open(log, "wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server",
                 "--backend-store-uri", f"{driver}://{POSTGRES_USER}@{HOST}:{cluster.port}/mlflow",
                 "--artifacts-destination", str(base / "artifacts"),
                 "--host", HOST, "--port", str(port), "--workers", "1"],
                cwd=base, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env=_server_env())
        deadline = time.monotonic() + SERVER_START_S
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                why = f"exited with code {server.returncode}" if server.poll() is not None else \
                    f"did not answer {url}/health within {SERVER_START_S} s"
                pytest.skip(f"mlflow server on PostgreSQL {why}; its last log lines:\n{_tail(log)}")
            time.sleep(0.5)
        yield url
    finally:
        if server is not None:
            _stop_server(server)
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_runs_started_together_against_a_postgresql_backed_server_all_finish(tracking_server, tmp_path, cli):
    from mlflow.tracking import MlflowClient

    from segbench.results.schema import read_results

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | LOCAL
    env |= {"SEGBENCH_CACHE_DIR": str(tmp_path / ".cache"), "PYTHONUNBUFFERED": "1"}
    outputs = [tmp_path / f"run{i}" for i in range(2)]  # two at once: both find or create the experiment
    procs = [subprocess.Popen([sys.executable, "-m", "segbench", "run", *TINY, "train.iters=2",
                               f"tracking.uri={tracking_server}", f"output_dir={out}"],
                              cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for out in outputs]
    deadline = time.monotonic() + RUNS_S
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=max(1.0, deadline - time.monotonic())))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert [p.returncode for p in procs] == [0] * len(outputs), [err[-2000:] for _, err in logs]

    client = MlflowClient(tracking_uri=tracking_server)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == len(outputs) and len(children) == len(outputs)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all("mIoU" in r.data.metrics for r in children)
    assert sorted(r.data.tags["mlflow.parentRunId"] for r in children) == sorted(r.info.run_id for r in parents)

    on_disk = {}
    for out in outputs:
        results = read_results(out / "results.json")
        assert results.mlflow.tracking_uri == tracking_server
        on_disk[results.mlflow.parent_run_id] = out / "results.json"
    assert sorted(on_disk) == sorted(r.info.run_id for r in parents)
    for parent in parents:
        run_id = parent.info.run_id
        assert "results.json" in [a.path for a in client.list_artifacts(run_id)]
        logged = Path(client.download_artifacts(run_id, "results.json", str(tmp_path / run_id)))
        assert logged.read_bytes() == on_disk[run_id].read_bytes()
        models, expected = read_results(logged).models, read_results(on_disk[run_id]).models
        assert [(m.name, m.metrics) for m in models] == [(m.name, m.metrics) for m in expected]
        child = next(r for r in children if r.data.tags["mlflow.parentRunId"] == run_id)
        assert models[0].mlflow_run_id == child.info.run_id
        assert child.data.metrics["mIoU"] == pytest.approx(models[0].metrics["mIoU"])

    code, _, err = cli("report", "--tracking-uri", tracking_server, "--out", str(tmp_path / "report"))
    assert code == 0, err  # the README's `segbench report` over the team's server
    assert "unet-resnet10t" in (tmp_path / "report" / "synthetic" / "leaderboard.md").read_text()


# ---------------------------------------------------------------- a server that dies mid-run loses nothing

KILL_ITERS = 10  # the server dies after the model's run opens and before its training (about 1 s of CPU) ends
EXIT_BOUND_S = 180  # from the server's death to the run's exit, on a loaded 2-core machine (measured: see below)


def _sqlite_server(store: Path, port: int, log: Path) -> subprocess.Popen:
    """``mlflow server`` on a sqlite store, artifacts proxied to a folder beside it, in its own process group."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store}",
             "--artifacts-destination", str(store.parent / "artifacts"), "--host", HOST, "--port", str(port),
             "--workers", "1"],
            cwd=store.parent, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=_server_env())


def _wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while not _healthy(url):
        if server.poll() is not None or time.monotonic() > deadline:
            pytest.skip(f"mlflow server did not start at {url}; its last log lines:\n{_tail(log)}")
        time.sleep(0.3)


@pytest.mark.slow
def test_a_server_killed_mid_training_loses_nothing_and_segbench_log_sends_the_runs_later(tmp_path, mlflow_uri, cli,
                                                                                        monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from segbench.models.checkpoints import sha256_file
    from segbench.results.schema import read_results

    store = Path(mlflow_uri[len("sqlite:///"):])  # an already-migrated store: the server starts in seconds
    port, log, out = _free_port(), tmp_path / "server.log", tmp_path / "out"
    url = f"http://{HOST}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | LOCAL
    env |= {"SEGBENCH_CACHE_DIR": str(tmp_path / ".cache"), "PYTHONUNBUFFERED": "1"}
    server = _sqlite_server(store, port, log)
    run = None
    try:
        _wait_healthy(url, server, log)
        run = subprocess.Popen([sys.executable, "-m", "segbench", "run", *TINY, f"train.iters={KILL_ITERS}",
                                f"tracking.uri={url}", f"output_dir={out}"], cwd=tmp_path, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        noted = tmp_path / "out.partial" / "state" / "unet-resnet10t.json"  # the model's run id, once it is open
        deadline = time.monotonic() + RUNS_S
        while run.poll() is None and not noted.is_file() and time.monotonic() < deadline:
            time.sleep(0.02)  # a look at a file, not a request to the server
        assert run.poll() is None and noted.is_file(), run.communicate()[1][-2000:]
        run.send_signal(signal.SIGSTOP)  # held where it is, training, until the store is gone
        opened = json.loads(noted.read_text())["mlflow_run_id"]
        assert opened, noted.read_text()  # the model's MLflow run is open on the server
        os.killpg(server.pid, signal.SIGKILL)  # the store goes away mid-training, without a word
        server.wait(timeout=30)
        run.send_signal(signal.SIGCONT)
        killed = time.monotonic()
        stdout, stderr = run.communicate(timeout=EXIT_BOUND_S)
        seconds = time.monotonic() - killed
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.wait(timeout=30)
        _stop_server(server)
    with capsys.disabled():  # shown as it is, and kept out of what `cli` captures below
        print(f"run exited {seconds:.1f} s after the tracking server was killed")

    assert run.returncode == 4, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("segbench: ")]
    assert len(lines) == 1 and lines[0].startswith(f"segbench: not logged: MLflow at {url}: "), stderr[-2000:]
    assert f"segbench log {out}" in lines[0] and "Traceback" not in stderr
    assert f"logging to run {opened} failed" in lines[0]  # the first call after the outage: the model's log
    results = read_results(out / "results.json")  # complete, in its final folder, with the checkpoint
    model = results.models[0]
    assert model.checkpoint is not None and (out / model.checkpoint.path / "model.safetensors").is_file()
    assert sha256_file(out / model.checkpoint.path / "model.safetensors") == model.checkpoint.sha256
    assert not (tmp_path / "out.partial").exists()

    server = _sqlite_server(store, port, log)  # the store comes back
    try:
        _wait_healthy(url, server, log)
        for key in [k for k in os.environ if k.startswith("MLFLOW_")]:  # the environment the run had
            monkeypatch.delenv(key)
        for key, value in LOCAL.items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(tmp_path)
        code, logged_out, logged_err = cli("log", str(out))  # in this process: no second interpreter start
        assert code == 0, logged_err[-2000:]
        assert logged_out.strip() == f"logged 2 runs of {out / 'results.json'} to {url}"
        client = MlflowClient(tracking_uri=url)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        logged = read_results(out / "results.json")
        artifacts = {r.info.run_id: [a.path for a in client.list_artifacts(r.info.run_id)] for r in runs}
    finally:
        _stop_server(server)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 1 and {r.info.status for r in runs} == {"FINISHED"}
    assert logged.mlflow.parent_run_id == parents[0].info.run_id  # the runs opened before the outage, completed
    assert logged.models[0].mlflow_run_id == children[0].info.run_id == opened
    assert children[0].data.metrics["mIoU"] == pytest.approx(model.metrics["mIoU"])
    assert children[0].data.metrics["train_seconds"] == pytest.approx(model.train.seconds)
    assert parents[0].data.params["train.iters"] == str(KILL_ITERS)
    assert artifacts[parents[0].info.run_id] == ["results.json"]
    assert artifacts[children[0].info.run_id] == ["per_class_unet-resnet10t.csv"]
