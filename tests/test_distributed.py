"""torchrun on the CPU (gloo): evaluation with 2 and 3 processes identical to a plain run's; ranks that train stay
identical."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_layouts import write_image, write_mask
from safetensors.torch import load_file, save_file

from segbench.core.distributed import World, shard

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")


def seven_images(root: Path) -> Path:
    """A folder data set of 7 validation images (and 4 training images) with 3 classes."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 7)):
        for i in range(count):
            write_image(root / "images" / split / f"{i}.png", seed=10 * len(split) + i, size=(32, 32))
            write_mask(root / "masks" / split / f"{i}.png", rng.integers(0, 3, (32, 32)))
    return root


def overrides(root: Path) -> list[str]:
    return ["suite=folder_example", f"data.root={root}", "data.classes=[a,b,c]", "data.palette=null",
            "models=[fpn-resnet10t]", "data.crop_size=null", "data.num_workers=0", "data.scale_range=[1.0,1.0]",
            "data.flip=false", "data.photometric=false", "eval.batch_size=2", "bench.enabled=false",
            "progress=false"]


def test_shards_are_contiguous_unpadded_and_cover_the_split():
    for length in (0, 1, 6, 7, 8):
        for size in (1, 2, 3, 4):
            parts = [shard(length, World(rank, size)) for rank in range(size)]
            assert [i for part in parts for i in part] == list(range(length))
            assert all(len(part) <= -(-length // size) for part in parts)


def _torchrun(processes: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"SEGBENCH_CACHE_DIR": str(cwd / ".cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "segbench", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_evaluation_is_identical_for_1_2_and_3_processes(tmp_path, mlflow_uri, cli, monkeypatch):
    from mlflow.tracking import MlflowClient

    root = seven_images(tmp_path / "data")
    uri = mlflow_uri  # already migrated: the first job does not spend seconds on the store's schema
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    records = {}
    for processes in (1, 2, 3):
        out = tmp_path / f"eval{processes}"
        args = ["run", *overrides(root), "train.enabled=false", f"output_dir={out}", f"tracking.uri={uri}",
                "tracking.experiment=ddp"]
        if processes == 1:  # the reference: a plain `segbench run` (in this process, no interpreter start)
            code, stdout, stderr = cli(*args)
        else:
            done = _torchrun(processes, args, tmp_path)
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        assert code == 0, stderr[-3000:]
        assert stdout.count("results: ") == 1  # rank 0 alone reports (and writes)
        results = json.loads((out / "results.json").read_text())
        records[processes] = results["models"][0]
        assert results["environment"]["world_size"] == processes
        assert records[processes]["evaluation"]["world_size"] == processes
        assert len(records[processes]["evaluation"]["images_per_second_per_rank"]) == processes
    one = records[1]
    assert one["evaluation"]["images"] == 7 and len(one["per_image"]["intersection"]) == 7
    assert np.array(one["confusion_matrix"]).sum() == 7 * 32 * 32
    for processes in (2, 3):
        assert records[processes]["evaluation"]["images"] == 7
        assert records[processes]["confusion_matrix"] == one["confusion_matrix"]
        assert records[processes]["per_image"] == one["per_image"]
        # everything counted is identical; the calibration error sums float32 softmax confidences, which differ
        # in the last bits when the same image is computed in another batch (as with another eval.batch_size)
        counted = {k: v for k, v in one["metrics"].items() if k != "ECE"}
        assert {k: v for k, v in records[processes]["metrics"].items() if k != "ECE"} == counted
        assert records[processes]["metrics"]["ECE"] == pytest.approx(one["metrics"]["ECE"], rel=1e-6)
        assert records[processes]["passport"]["boundary"] == one["passport"]["boundary"]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 3 and len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_rank(rank: int, size: int, port: int, root: str, out: str) -> None:
    """One rank of a 2-process job: train 4 iterations, then save this rank's weights."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from segbench.core.distributed import launched, process_group
    from segbench.data.registry import build_dataset, dataset_info
    from segbench.models.registry import parse_spec
    from segbench.pipeline import runner as runner
    from segbench.pipeline.session import Session
    from segbench.pipeline.validation import load_config

    cfg = load_config([*overrides(Path(root)), "train.iters=4", "train.batch_size=4", "tracking.enabled=false",
                       f"output_dir={out}/run", "train.save_checkpoint=false"])
    world, device = launched(), torch.device("cpu")
    info, spec = dataset_info(cfg.data), parse_spec(cfg.models[0])
    train_set = build_dataset(cfg.data, cfg.data.train_split, cfg.seed)
    with process_group(world, device), Session(cfg, "run", device, world) as session:
        runner.seed_everything(cfg.seed + rank)  # different on each rank: DDP must still agree
        model, _ = runner._build(spec, cfg, info)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/initial{rank}.safetensors")
        model, record, _ = runner._train(model, spec, info, train_set, session, None)
        assert record.world_size == size and record.batch_size == 4
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.safetensors")


@pytest.mark.slow
def test_two_ranks_that_train_hold_identical_weights(tmp_path):
    root = seven_images(tmp_path / "data")
    torch.multiprocessing.spawn(_train_rank, args=(2, _free_port(), str(root), str(tmp_path)), nprocs=2)
    first, second = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    initial = load_file(tmp_path / "initial0.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0, msg=key)
    changed = [k for k in first if first[k].is_floating_point() and not torch.equal(first[k], initial[k])]
    assert len(changed) > len(first) // 2  # four steps of training moved the weights
    assert not (tmp_path / "initial0.safetensors").read_bytes() == (tmp_path / "initial1.safetensors").read_bytes()
