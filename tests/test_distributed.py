"""torchrun on the CPU (gloo): an evaluation by 3 processes, with a user's metric, identical to a plain one's; ranks
that train stay identical."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_layouts import write_image, write_mask
from safetensors.torch import load_file, save_file
from user_code import user_code_forgotten

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


ERROR_RATE = '''
import torch

import segbench
from segbench.metrics.protocol import Accumulator, Scores


@segbench.register_metric("error_rate", higher_is_better=False,
                          definition="labelled pixels predicted as another class / labelled pixels")
class ErrorRate(Accumulator):
    summed = ("counts",)

    @classmethod
    def build(cls, setup):
        accumulator = cls()
        accumulator.num_classes = setup.info.num_classes
        accumulator.counts = torch.zeros(2, dtype=torch.float64, device=setup.device)
        return accumulator

    def update(self, batch):
        labelled = batch.target < self.num_classes
        self.counts += torch.stack([(labelled & (batch.pred != batch.target)).sum(), labelled.sum()]).double()

    def compute(self, split):
        wrong, labelled = self.counts.tolist()
        return Scores({"error_rate": wrong / labelled})
'''


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, _migrated_store, cli_for_setup) -> dict:
    """One evaluation of a random model on the 7 images, with a user's metric (``imports=[my_metric]``): by torchrun
    with 3 processes (uneven shards of 3, 2 and 2 images, one rank ending on a batch of one), logging to MLflow, and
    by a plain `segbench eval` in this process, the reference. Returns the folder, the two results and the outputs."""
    folder = tmp_path_factory.mktemp("ddp")
    root = seven_images(folder / "data")
    (folder / "my_metric.py").write_text(ERROR_RATE)
    shutil.copy(_migrated_store, folder / "mlflow.db")  # already migrated: no seconds spent on the store's schema
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    common = ["eval", "imports=[my_metric]", *overrides(root)]
    three = _torchrun(3, [*common, f"output_dir={folder / 'three'}", f"tracking.uri={uri}", "tracking.experiment=ddp"],
                      folder)
    assert three.returncode == 0, three.stderr[-3000:]
    with user_code_forgotten("my_metric"):
        code, stdout, stderr = cli_for_setup(*common, f"output_dir={folder / 'one'}", "tracking.enabled=false",
                                             cwd=folder, env={"SEGBENCH_CACHE_DIR": str(folder / ".cache")})
    assert code == 0, stderr[-3000:]
    results = {name: json.loads((folder / name / "results.json").read_text()) for name in ("one", "three")}
    return {"folder": folder, "uri": uri, "results": results, "stdout": {"one": stdout, "three": three.stdout}}


@pytest.mark.slow
def test_evaluation_by_3_torchrun_processes_is_identical_to_one_process(evaluated):
    from mlflow.tracking import MlflowClient

    records = {}
    for name, processes in (("one", 1), ("three", 3)):
        results = evaluated["results"][name]
        assert evaluated["stdout"][name].count("results: ") == 1  # rank 0 alone reports (and writes)
        records[processes] = results["models"][0]
        assert results["environment"]["world_size"] == processes
        assert records[processes]["evaluation"]["world_size"] == processes
        assert len(records[processes]["evaluation"]["images_per_second_per_rank"]) == processes
    one, three = records[1], records[3]
    assert one["evaluation"]["images"] == 7 and len(one["per_image"]["intersection"]) == 7
    assert np.array(one["confusion_matrix"]).sum() == 7 * 32 * 32
    assert three["evaluation"]["images"] == 7
    assert three["confusion_matrix"] == one["confusion_matrix"]
    assert three["per_image"] == one["per_image"]
    # everything counted is identical; the calibration error sums float32 softmax confidences, which differ in the
    # last bits when the same image is computed in another batch (as with another eval.batch_size)
    counted = {k: v for k, v in one["metrics"].items() if k != "ECE"}
    assert {k: v for k, v in three["metrics"].items() if k != "ECE"} == counted
    assert three["metrics"]["ECE"] == pytest.approx(one["metrics"]["ECE"], rel=1e-6)
    assert three["passport"]["boundary"] == one["passport"]["boundary"]
    client = MlflowClient(tracking_uri=evaluated["uri"])
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}  # rank 0 alone


@pytest.mark.slow
def test_a_user_metric_is_recorded_gated_and_summed_exactly_under_torchrun(evaluated, cli):
    one, three = evaluated["results"]["one"], evaluated["results"]["three"]
    rate = one["models"][0]["metrics"]["error_rate"]
    assert rate == three["models"][0]["metrics"]["error_rate"]  # exact: summed over the ranks' shards
    matrix = np.array(one["models"][0]["confusion_matrix"])
    assert 0 < rate < 1 and rate == pytest.approx(1 - np.trace(matrix) / matrix.sum(), abs=1e-12)  # by hand
    for results in (one, three):
        definition = results["metric_definitions"]["error_rate"]
        assert definition["higher_is_better"] is False and definition["origin"]["module"] == "my_metric"
    # the gate reads the two files (the metric's definition is in them): in this process, no interpreter start
    folder = evaluated["folder"]
    code, out, err = cli("gate", str(folder / "three"), str(folder / "one"), "--max-drop", "error_rate=0.0")
    assert code == 0 and "error_rate" in out, out + err


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
    # both ranks in processes of their own: spawn stops the job, and fails the test, when either rank fails
    torch.multiprocessing.spawn(_train_rank, args=(2, _free_port(), str(root), str(tmp_path)), nprocs=2)
    first, second = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    initial = load_file(tmp_path / "initial0.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0, msg=key)
    changed = [k for k in first if first[k].is_floating_point() and not torch.equal(first[k], initial[k])]
    assert len(changed) > len(first) // 2  # four steps of training moved the weights
    assert not (tmp_path / "initial0.safetensors").read_bytes() == (tmp_path / "initial1.safetensors").read_bytes()
