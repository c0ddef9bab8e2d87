"""Live and replayed MLflow logs are equal: a run's (and a score's) child run in the store it logged to live has the
same metric names and values as the one `segbench log` makes from its results.json in another store."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from fixtures_layouts import make_cityscapes, write_mask

RUN = ["models=[unet-resnet10t]", "train.iters=2", "train.batch_size=2", "data.image_size=32", "data.train_samples=4",
       "data.val_samples=4", "eval.batch_size=2", "bench.warmup=1", "bench.iters=2", "bench.repeats=1",
       "train.eval_every=1", "train.eval_samples=2", "progress=false"]


@pytest.fixture
def second_store(_migrated_store, tmp_path) -> str:
    path = tmp_path / "replayed.db"
    shutil.copy(_migrated_store, path)
    return f"sqlite:///{path}"


def children(uri: str) -> dict[str, dict[str, float]]:
    """Each child run's metrics (latest values) and, for curves, the whole history, by run name."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    out = {}
    for run in runs:
        if "mlflow.parentRunId" not in run.data.tags:
            continue
        assert run.info.status == "FINISHED"
        out[run.data.tags["mlflow.runName"]] = {
            name: [m.value for m in client.get_metric_history(run.info.run_id, name)] for name in run.data.metrics}
    return out


def differing(live: dict, replayed: dict) -> dict:
    """The metrics whose histories differ: name -> (live, replayed)."""
    return {k: (live.get(k), replayed.get(k)) for k in set(live) | set(replayed) if live.get(k) != replayed.get(k)}


def test_a_run_logged_live_and_replayed_by_segbench_log_gives_the_same_metrics(cli, tmp_path, mlflow_uri,
                                                                              second_store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("run", *RUN, f"tracking.uri={mlflow_uri}", f"output_dir={tmp_path / 'out'}")
    assert code == 0, err
    code, _, err = cli("log", str(tmp_path / "out"), "--tracking-uri", second_store)
    assert code == 0, err
    live, replayed = children(mlflow_uri), children(second_store)
    assert list(live) == ["unet-resnet10t"]
    assert set(live["unet-resnet10t"]) >= {"mIoU", "IoU.pole", "train_loss", "val_mIoU", "images_per_second"}
    assert len(live["unet-resnet10t"]["train_loss"]) == 2 and len(live["unet-resnet10t"]["val_mIoU"]) == 2
    assert replayed == live, differing(live["unet-resnet10t"], replayed.get("unet-resnet10t", {}))


def test_a_score_logged_live_and_replayed_gives_the_same_metrics(cli, tmp_path, mlflow_uri, second_store,
                                                                monkeypatch):
    from segbench.config.schema import DataConfig
    from segbench.data.registry import build_dataset

    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / "cache"))
    root = make_cityscapes(tmp_path / "cs")
    val = build_dataset(DataConfig(name="cityscapes", root=str(root)), "val")
    rng = np.random.default_rng(0)
    for index, sample in enumerate(val.samples):
        target = val.target(index)
        pred = np.where(rng.random(target.shape) < 0.2, rng.integers(0, 19, target.shape), target)
        write_mask(tmp_path / "pred" / f"{sample.id}.png", np.where(pred == 255, 0, pred))
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("score", "suite=cityscapes", f"data.root={root}", f"pred_dir={tmp_path / 'pred'}",
                       "progress=false", f"tracking.uri={mlflow_uri}", f"output_dir={tmp_path / 'out'}")
    assert code == 0, err
    code, _, err = cli("log", str(tmp_path / "out"), "--tracking-uri", second_store)
    assert code == 0, err
    live, replayed = children(mlflow_uri), children(second_store)
    assert set(live["pred"]) >= {"mIoU", "mIoU_category", "IoU.category.flat", "bIoU"}
    assert replayed == live, differing(live["pred"], replayed.get("pred", {}))
