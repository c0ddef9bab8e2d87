import os
import shutil
import sys
from pathlib import Path

import pytest
from user_code import user_code_forgotten

os.environ["HF_HUB_OFFLINE"] = "1"
# OpenMP threads sleep instead of spinning while they wait: on a shared 2-core machine spinning threads of
# one process starve the others (tens of times more CPU for the same small models).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One of `pytest -n N`'s workers (README: pytest -n auto): one intra-op thread each, for it and the processes it
    # starts, so that N workers share N cores rather than oversubscribe them (set before torch is imported).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


def pytest_configure(config):
    """Under `pytest -n N` (xdist's default distribution, "load"), tests marked ``xdist_group`` go to one worker:
    see ``pytest_collection_modifyitems``. A worker parses the command line again (where the distribution is
    "load"), so it is told to name the groups in its test ids, as xdist's workers do under --dist loadgroup."""
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"
    if getattr(config, "workerinput", {}).get("loadgroup"):
        config.option.loadgroup = True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist: tell each worker whether tests are distributed by group (see ``pytest_configure``)."""
    node.workerinput["loadgroup"] = node.config.getvalue("dist") == "loadgroup"


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """The slow tests first: under `pytest -n N` the workers start on the longest tests and the short ones fill in
    around them, instead of one long test running alone at the end. The tests of a module that share one of its
    module-scoped fixtures (exported files, a pair of runs, a server) form an ``xdist_group``: one worker runs them
    all and sets the fixture up once, where load distribution would set it up on every worker."""
    for item in items:
        module = item.nodeid.split("::")[0]
        definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {}).values()
        if any(found[-1].scope == "module" and found[-1].baseid == module for found in definitions):
            item.add_marker(pytest.mark.xdist_group(module))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _user_code_forgotten_after_each_test():
    """No test sees the models, data sets, metrics or modules that another test's user code registered (in-process
    runs: the `cli` fixture, segbench.evaluate)."""
    with user_code_forgotten():
        yield


@pytest.fixture(scope="session")
def _migrated_store(tmp_path_factory) -> Path:
    """A new MLflow sqlite store with its schema migrations run once per test session (they take ~3 s)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(_migrated_store, tmp_path) -> str:
    """A fresh, already-migrated MLflow store for one test."""
    path = tmp_path / "mlflow.db"
    shutil.copy(_migrated_store, path)
    return f"sqlite:///{path}"


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the real console entry point in-process; return (exit code, stdout, stderr)."""
    from segbench.cli.main import entry

    def invoke(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["segbench", *args])
        code = 0
        try:
            entry()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def _in_process(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str, str]:
    """``segbench ARGS`` through the console entry point in this process, with ``env`` added to the environment and
    in ``cwd``; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from segbench.cli.main import entry

    out, err, code = io.StringIO(), io.StringIO(), 0
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        if cwd is not None:
            patch.chdir(cwd)
        patch.setattr(sys, "argv", ["segbench", *args])
        try:
            entry()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def cli_for_setup():
    """``cli_for_setup(*args, env=, cwd=)``: the ``cli`` fixture for module- and session-scoped set-ups (which cannot
    use function-scoped fixtures): ``segbench ARGS`` in this process, without a new interpreter's seconds of imports;
    returns (exit code, stdout, stderr)."""
    return _in_process


# ---------------------------------------------------------------- results.json builders (report, gate, schema tests)

RESULT_CLASSES = ["road", "car", "pole"]


def _mean_iou(intersection, union) -> float:
    """Dataset-level mIoU by hand: per-class sums, classes with no union left out."""
    import numpy as np

    i, u = np.asarray(intersection).sum(0), np.asarray(union).sum(0)
    return float(np.mean([a / b for a, b in zip(i, u) if b > 0]))


def _mean_dice(intersection, union) -> float:
    """Dataset-level mDice by hand: 2I / (U + I) per class."""
    import numpy as np

    i, u = np.asarray(intersection).sum(0), np.asarray(union).sum(0)
    return float(np.mean([2 * a / (b + a) for a, b in zip(i, u) if b > 0]))


@pytest.fixture
def images():
    """``images(n, iou, seed)``: per-image intersections and unions with a dataset-level IoU near ``iou``."""
    import numpy as np

    def make(n: int, iou: float, seed: int = 0):
        union = np.random.default_rng(seed).integers(80, 120, size=(n, len(RESULT_CLASSES)))
        return np.round(union * iou).astype(int), union

    return make


@pytest.fixture
def record():
    """``record(name, intersection, union, ips)``: a version-1 model record; metrics computed by hand."""
    import numpy as np

    def make(name: str, intersection, union, ips: float = 100.0) -> dict:
        intersection, union = np.asarray(intersection), np.asarray(union)
        return {
            "name": name, "arch": name.split("-")[0], "backbone": "resnet10t", "params": 1_000_000,
            "metrics": {"mIoU": _mean_iou(intersection, union), "mDice": _mean_dice(intersection, union),
                        "aAcc": 0.9},
            "evaluation": {"mode": "whole", "images": len(intersection)},
            "per_image": {"intersection": intersection.tolist(), "union": union.tolist()},
            "speed": [{"images_per_second": ips, "batch_size": 1, "input_shape": [1, 3, 64, 64],
                       "precision": "fp32", "memory_format": "contiguous", "compile": False,
                       "latency_ms_p50": 1000 / ips}],
        }

    return make


@pytest.fixture
def results():
    """``results(*records, suite, seed, hardware)``: a version-1 results.json around model records."""

    def make(*records: dict, suite: str = "toy", seed: int = 0, hardware: str = "cpu-A") -> dict:
        classes = list(RESULT_CLASSES)
        return {
            "schema_version": 1,
            "suite": {"name": suite, "config_hash": f"hash{seed}",
                      "config": {"seed": seed, "data": {"name": "synthetic"}}},
            "dataset": {"name": "synthetic", "classes": classes, "split": "val"},
            "convention": {"accumulation": "dataset", "absent_class": "nan_excluded", "ignore_index": 255,
                           "label_space": f"synthetic-{len(classes)}", "num_classes": len(classes)},
            "environment": {"device": "cpu", "device_name": hardware},
            "models": list(records),
        }

    return make
