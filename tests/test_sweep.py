"""Sweeps as job arrays: shard=I/N and shard=auto split a suite's models; the shards merge in one report."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_failures import TINY

from segbench.errors import UserError
from segbench.pipeline.sweep import Shard, parse_shard

MODELS = ["a", "b", "c", "d", "e"]


def test_shards_split_the_models_without_overlap_or_gap():
    parts = [parse_shard(f"{i}/3", "h").select(MODELS) for i in range(3)]
    assert parts == [["a", "d"], ["b", "e"], ["c"]]
    assert parse_shard("1/3", "h").sweep == "h-3"


@pytest.mark.parametrize(("env", "expected"), [
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "3",
      "SLURM_ARRAY_JOB_ID": "991"}, Shard(1, 3, "991")),
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}, Shard(2, 3, "h-3")),
    ({"JOB_COMPLETION_INDEX": "0", "SEGBENCH_SHARD_COUNT": "4", "SEGBENCH_SWEEP": "nightly"}, Shard(0, 4, "nightly")),
])
def test_auto_reads_slurm_and_kubernetes(env, expected):
    assert parse_shard("auto", "h", env) == expected


@pytest.mark.parametrize(("value", "env", "message"), [
    ("3/3", {}, "expected 0 <= I < N, got shard 3 of 3"),
    ("1of3", {}, "expected I/N"),
    ("x/3", {}, "I must be an integer"),
    ("auto", {}, "neither SLURM_ARRAY_TASK_ID"),
    ("auto", {"JOB_COMPLETION_INDEX": "1"}, "set SEGBENCH_SHARD_COUNT"),
])
def test_bad_shards_are_refused(value, env, message):
    with pytest.raises(UserError, match=message):
        parse_shard(value, "h", env)


def test_the_shards_of_a_sweep_merge_in_one_report(cli, tmp_path, mlflow_uri, monkeypatch):
    monkeypatch.setenv("SEGBENCH_SWEEP", "sweep-42")
    models = "models=[unet-resnet10t,fpn-resnet10t,pspnet-resnet10t]"
    for index in (0, 1):
        code, _, err = cli("run", *TINY, models, "train.iters=1", f"shard={index}/2", f"tracking.uri={mlflow_uri}",
                           f"output_dir={tmp_path / f'shard{index}'}")
        assert code == 0, err
    first, second = (json.loads((tmp_path / f"shard{i}" / "results.json").read_text()) for i in (0, 1))
    assert [m["name"] for m in first["models"]] == ["unet-resnet10t", "pspnet-resnet10t"]
    assert [m["name"] for m in second["models"]] == ["fpn-resnet10t"]
    assert first["suite"]["shard"] == {"index": 0, "count": 2, "sweep": "sweep-42"}
    assert first["suite"]["config_hash"] == second["suite"]["config_hash"]
    code, _, err = cli("report", str(tmp_path / "shard0"), str(tmp_path / "shard1"), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    table = pd.read_csv(next((tmp_path / "rep").rglob("*.csv")))
    assert sorted(table["model"]) == ["fpn-resnet10t", "pspnet-resnet10t", "unet-resnet10t"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.`segbench.sweep` = 'sweep-42'")
    assert sorted(r.data.tags["segbench.shard"] for r in runs) == ["0/2", "1/2"]
