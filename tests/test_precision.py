"""Mixed precision and channels-last memory format for training and evaluation, and validation during training
(train.eval_every, train.keep)."""

from __future__ import annotations

import json

import pytest
import torch
from failure_table import assert_refused
from torch import nn

from segbench.config.schema import EvalConfig, TrainConfig, config_hash, read_config
from segbench.evaluation.loop import evaluate
from segbench.train.loop import train

SMALL = ["models=[unet-resnet10t]", "train.batch_size=2", "data.train_samples=8", "data.val_samples=4",
         "data.image_size=32", "eval.batch_size=4", "bench.enabled=false", "progress=false"]


class Probe(nn.Module):
    """A 1x1 convolution that notes the dtype of its output and the memory format of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.seen: list[tuple[torch.dtype, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        self.seen.append((out.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        return out


def _batches(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 3, 8, 8, generator=g), torch.randint(0, 3, (2, 8, 8), generator=g)) for _ in range(n)]


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                                  ("fp16", torch.float16)])
def test_training_and_evaluation_run_under_autocast_in_the_asked_format(precision, dtype):
    model = Probe()
    log = train(model, _batches(), nn.CrossEntropyLoss(), TrainConfig(iters=4, precision=precision, lr=1e-2,
                                                                       channels_last=True),
                torch.device("cpu"), progress=False)
    assert model.seen == [(dtype, True)] * 4
    assert all(torch.isfinite(torch.tensor(log.losses)))
    assert model.conv.weight.dtype == torch.float32  # autocast: the weights stay fp32
    model.seen.clear()
    result = evaluate(model, _batches(2), 3, 255, torch.device("cpu"),
                      EvalConfig(precision=precision, channels_last=True, passport=False), progress=False)
    assert model.seen == [(dtype, True)] * 2 and result.confusion.matrix.sum() == 2 * 2 * 8 * 8


def test_bf16_on_the_cpu_trains_and_evaluates_through_the_cli(cli, tmp_path):
    code, _, err = cli("run", *SMALL, "train.iters=4", "train.precision=bf16", "eval.precision=bf16",
                       "train.channels_last=true", "eval.channels_last=true", "tracking.enabled=false",
                       f"output_dir={tmp_path / 'out'}")
    assert code == 0, err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    record = results["models"][0]
    assert (record["train"]["precision"], record["train"]["channels_last"]) == ("bf16", True)
    assert (record["evaluation"]["precision"], record["evaluation"]["channels_last"]) == ("bf16", True)
    assert 0 <= record["metrics"]["mIoU"] <= 1 and record["train"]["final_loss"] > 0
    assert results["suite"]["config"]["train"]["precision"] == "bf16"


def test_precision_is_in_the_hash_and_the_defaults_leave_it_as_it_was():
    base = read_config([])
    assert config_hash(read_config(["train.precision=fp32", "eval.channels_last=false", "train.keep=last",
                                    "train.checkpoint_every=50"])) == config_hash(base)
    changed = {config_hash(read_config([o])) for o in ("train.precision=bf16", "eval.precision=fp16",
                                                       "train.channels_last=true", "eval.channels_last=true",
                                                       "train.eval_every=5")}
    assert len(changed) == 5 and config_hash(base) not in changed


@pytest.mark.parametrize(("override", "pattern"), [
    ("train.precision=fp8", r"train\.precision: expected one of fp32, bf16, fp16, got the string 'fp8'"),
    ("eval.precision=half", r"eval\.precision"),
    ("train.keep=best", r"train\.keep.*train\.eval_every"),
    ("train.keep=first", r"train\.keep"),
    ("train.checkpoint_every=-1", r"train\.checkpoint_every"),
])
def test_bad_precision_and_validation_settings_are_refused(cli, override, pattern):
    assert_refused(*cli("run", override), pattern)


@pytest.mark.parametrize("keep", ["last", "best"])
def test_eval_every_logs_an_miou_curve_and_keep_picks_the_weights(cli, tmp_path, keep):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, _, err = cli("run", *SMALL, "train.iters=6", "train.lr=0.01", "train.eval_every=2", f"train.keep={keep}",
                       f"tracking.uri={uri}", f"output_dir={tmp_path / 'out'}")
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "results.json").read_text())["models"][0]
    curve = record["train"]["val_curve"]
    assert [int(i) for i, _ in curve] == [2, 4, 6] and record["train"]["val_images"] == 4
    history = MlflowClient(tracking_uri=uri).get_metric_history(record["mlflow_run_id"], "val_mIoU")
    assert sorted((m.step, m.value) for m in history) == [(int(i), v) for i, v in curve]
    # the validation set is the whole split here, so the final evaluation repeats the kept weights' score
    best = max(curve, key=lambda point: point[1])
    expected = best if keep == "best" else curve[-1]
    assert record["metrics"]["mIoU"] == pytest.approx(expected[1], abs=1e-12)
    assert record["train"]["keep"] == keep and record["train"]["best_iter"] == (int(best[0]) if keep == "best"
                                                                                else None)
