"""The throughput measurement: images (not batches) per second, repeats, FLOPs, OOM halving, GPU paths."""

import json

import pytest
import torch
from torch import nn

import segbench.deploy.timing as benchmark
from segbench.deploy.timing import Reference, TimingPlan, measure_throughput, typical_range

CPU = torch.device("cpu")
TIMED_BLOCK = benchmark._timed_block


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.load = 1.0  # how much slower than idle the machine runs now

    def __call__(self) -> float:
        return self.now


class KnownCost(nn.Module):
    """A model whose forward pass costs exactly ``seconds_per_image`` per image on the fake clock."""

    def __init__(self, clock: FakeClock, seconds_per_image: float) -> None:
        super().__init__()
        self.clock, self.seconds_per_image = clock, seconds_per_image
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.now += self.seconds_per_image * x.shape[0] * self.clock.load
        return self.conv(x)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(benchmark, "_clock", fake)
    return fake


def busy(monkeypatch, clock: FakeClock, loads: list[float], blocks_per_load: int = 1) -> None:
    """A machine whose load changes from one timed block to the next (every ``blocks_per_load`` blocks)."""
    calls = [0]

    def block(*args):
        clock.load = loads[(calls[0] // blocks_per_load) % len(loads)]
        calls[0] += 1
        return TIMED_BLOCK(*args)

    monkeypatch.setattr(benchmark, "_timed_block", block)


@pytest.mark.parametrize("batch", [1, 4])
def test_reports_images_per_second_not_batches(clock, batch):
    model = KnownCost(clock, seconds_per_image=0.01)
    result = measure_throughput(model, (batch, 3, 8, 8), CPU, TimingPlan(warmup=2, iters=5, repeats=3))
    assert result.images_per_second == pytest.approx(100.0)  # batches per second would be 100 / batch
    assert result.latency_ms_p50 == pytest.approx(10.0 * batch)  # latency is per batch
    assert result.images_per_second_repeats == pytest.approx([100.0] * 3)
    assert result.spread == pytest.approx(0.0)
    assert result.timed_iters == 5 and result.repeats == 3 and result.warmup_iters == 2


def test_warmup_seconds_extend_the_warmup(clock):
    model = KnownCost(clock, seconds_per_image=0.1)
    result = measure_throughput(model, (1, 3, 8, 8), CPU, TimingPlan(warmup=1, warmup_seconds=0.95, iters=2,
                                                                     repeats=1))
    assert result.warmup_iters == 10


def test_flops_of_a_known_layer():
    model = nn.Conv2d(3, 8, kernel_size=1, bias=False)
    result = measure_throughput(model, (2, 3, 16, 16), CPU, TimingPlan(warmup=1, iters=2, repeats=1))
    assert result.gflops_per_image * 1e9 == pytest.approx(2 * 3 * 8 * 16 * 16)  # one multiply-add = 2 FLOPs
    assert result.params == 24


class OutOfMemoryAbove(nn.Module):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.conv(x)


def test_out_of_memory_halves_the_batch_and_says_so():
    plan = TimingPlan(warmup=1, iters=2, repeats=1, oom="halve")
    result = measure_throughput(OutOfMemoryAbove(2), (8, 3, 8, 8), CPU, plan)
    assert result.batch_size == 2 and result.requested_batch_size == 8 and result.oom_halvings == 2
    assert result.input_shape == [2, 3, 8, 8]  # as results.json stores it


def test_out_of_memory_fails_naming_the_batch_size_by_default():
    from segbench.errors import UserError

    with pytest.raises(UserError, match="out of memory at batch size 8 .*bench.oom=halve"):
        measure_throughput(OutOfMemoryAbove(2), (8, 3, 8, 8), CPU, TimingPlan(warmup=1, iters=2, repeats=1))


def test_min_seconds_adds_timed_blocks(clock):
    model = KnownCost(clock, seconds_per_image=0.01)
    result = measure_throughput(model, (1, 3, 8, 8), CPU, TimingPlan(warmup=1, iters=5, repeats=2, min_seconds=0.18))
    assert result.repeats == 4  # blocks of 0.05 s: two asked for, four to reach 0.18 s
    assert result.timed_seconds == pytest.approx(0.2) and result.min_seconds == 0.18
    assert len(result.images_per_second_repeats) == 4


def test_a_reference_is_timed_alternately_block_by_block(clock, monkeypatch):
    busy(monkeypatch, clock, [1.0, 2.0, 1.5], blocks_per_load=2)  # each block of ours and the reference's after it
    model, reference = KnownCost(clock, seconds_per_image=0.01), KnownCost(clock, seconds_per_image=0.005)
    result = measure_throughput(model, (1, 3, 8, 8), CPU, TimingPlan(warmup=1, iters=5, repeats=3),
                                Reference("fast-r10", reference))
    assert result.images_per_second_repeats == pytest.approx([100.0, 50.0, 100 / 1.5])
    assert result.reference_images_per_second_repeats == pytest.approx([200.0, 100.0, 200 / 1.5])
    assert result.reference_model == "fast-r10" and result.spread == pytest.approx(0.75)
    assert result.repeats == 3  # the figures disagree by 75 %, their ratios not at all: no more blocks
    alone = measure_throughput(model, (1, 3, 8, 8), CPU, TimingPlan(warmup=1, iters=5, repeats=3))
    assert alone.reference_model is None and alone.reference_images_per_second_repeats is None


def test_more_blocks_while_the_repeats_disagree(clock, monkeypatch):
    model = KnownCost(clock, seconds_per_image=0.01)
    plan = TimingPlan(warmup=1, iters=5, repeats=3)
    busy(monkeypatch, clock, [2.0] + [1.0] * 20)  # the first block disturbed
    result = measure_throughput(model, (1, 3, 8, 8), CPU, plan)
    assert result.repeats == 4  # [50, 100, 100]: 50 % apart; a fourth block: the quarter at each end left out
    assert result.images_per_second == pytest.approx(100.0)
    busy(monkeypatch, clock, [1.0, 2.0])  # a machine that never settles: at most 3 x the repeats
    assert measure_throughput(model, (1, 3, 8, 8), CPU, plan).repeats == 9
    busy(monkeypatch, clock, [1.0, 2.0])
    assert measure_throughput(model, (1, 3, 8, 8), CPU, TimingPlan(warmup=1, iters=5, repeats=3,
                                                                   repeat_factor=1)).repeats == 3


def test_typical_range_leaves_out_the_extreme_quarters():
    assert typical_range([3.0, 1.0, 2.0]) == (1.0, 3.0)  # fewer than 4: all of them
    assert typical_range([9.0, 1.0, 2.0, 3.0]) == (2.0, 3.0)
    assert typical_range([float(v) for v in range(1, 10)]) == (3.0, 7.0)


def test_the_timing_plan_of_a_suite_and_its_checks():
    from segbench.config.schema import BenchConfig

    plan = TimingPlan.from_bench(BenchConfig(iters=7, repeats=4, precision="bf16", oom="halve"), "onnxruntime")
    assert (plan.backend, plan.iters, plan.repeats, plan.precision, plan.oom) == ("onnxruntime", 7, 4, "bf16",
                                                                                  "halve")
    with pytest.raises(ValueError, match="precision must be one of"):
        TimingPlan(precision="fp8")
    with pytest.raises(ValueError, match="oom must be one of"):
        TimingPlan(oom="shrink")


def test_other_errors_are_not_taken_for_out_of_memory():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        measure_throughput(Broken(), (4, 3, 8, 8), CPU, TimingPlan(warmup=1, iters=1, repeats=1))


def test_settings_are_recorded_with_the_figure():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    plan = TimingPlan(warmup=1, iters=2, repeats=2, precision="bf16", channels_last=True)
    result = measure_throughput(model, (1, 3, 16, 16), CPU, plan)
    assert result.precision == "bf16" and result.memory_format == "channels_last"
    assert result.timer == "perf_counter" and result.memory_measure == "cpu_peak_rss_growth"
    assert result.device == "cpu" and not result.compile
    assert result.backend == "eager" and result.provider == "torch"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: CUDA events, autocast, CUDA memory")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_gpu_paths(precision):
    from segbench.models import factory

    model = factory.build("unet-resnet10t", 3, "random").module
    plan = TimingPlan(warmup=3, iters=5, repeats=2, precision=precision, channels_last=True)
    result = measure_throughput(model, (2, 3, 128, 128), torch.device("cuda"), plan)
    assert result.timer == "cuda_event" and result.memory_measure == "cuda_max_allocated"
    assert result.peak_memory_mb > 0 and result.images_per_second > 0


@pytest.mark.slow
def test_bench_command_writes_json_and_mlflow(cli, tmp_path, mlflow_uri, monkeypatch):
    out = tmp_path / "bench"
    code, stdout, stderr = cli("bench", "models=[unet-resnet10t,pspnet-resnet10t]", "bench.batch_sizes=[1,2]",
                               "bench.input_size=[64,96]", "bench.warmup=1", "bench.iters=2", "bench.repeats=2",
                               f"output_dir={out}", f"tracking.uri={mlflow_uri}")
    assert code == 0, stderr
    data = json.loads((out / "bench.json").read_text())
    assert data["environment"]["cpu"] and data["environment"]["threads"] >= 1
    assert [m["name"] for m in data["models"]] == ["unet-resnet10t", "pspnet-resnet10t"]
    for record in data["models"]:
        assert [s["batch_size"] for s in record["speed"]] == [1, 2]
        assert all(s["isolated"] and s["backend"] == "eager" for s in record["speed"])  # a fresh process each
        assert all(s["input_shape"][2:] == [64, 96] for s in record["speed"])
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)  # not mlflow.set_tracking_uri: it would outlive this test
    runs = mlflow.search_runs(experiment_names=["synthetic"])
    child = runs[runs["tags.mlflow.runName"] == "unet-resnet10t"].iloc[0]
    assert child["metrics.images_per_second.bs2"] == pytest.approx(data["models"][0]["speed"][1]["images_per_second"])


def test_bench_rejects_a_bad_precision(cli):
    code, _, err = cli("bench", "bench.precision=fp8")
    assert code == 2 and "bench.precision: expected one of fp32, bf16, fp16, got the string 'fp8'" in err


@pytest.mark.parametrize("override, message", [
    ("bench.backends=[eager,onnxrt]", "bench.backends: unknown backend 'onnxrt'; did you mean 'onnxruntime'?"),
    ("eval.backends=[tensorrtt]", "eval.backends: unknown backend 'tensorrtt'; did you mean 'tensorrt'?"),
    ("bench.backends=[eager,eager]", "bench.backends: backend 'eager' is listed twice"),
    ("bench.compile=true", "bench.compile was replaced by bench.backends: use bench.backends=[compile]"),
    ("bench.oom=shrink", "bench.oom: expected one of fail, halve, got the string 'shrink'"),
    ("bench.min_seconds=-1", "bench.min_seconds: expected a non-negative number"),
])
def test_bench_settings_are_checked_up_front(cli, tmp_path, override, message):
    code, _, err = cli("bench", override, f"output_dir={tmp_path / 'out'}")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_speed_metrics_name_each_backend():
    from segbench.pipeline.logged import speed_metrics
    from segbench.results.speed import Speed

    records = [Speed(backend=b, requested_batch_size=n, images_per_second=ips, latency_ms_p50=1.0)
               for b, n, ips in (("eager", 1, 10.0), ("eager", 4, 12.0), ("onnxruntime", 1, 20.0))]
    metrics = speed_metrics(records)
    assert metrics["images_per_second"] == 10.0 and metrics["images_per_second.bs4"] == 12.0
    assert metrics["images_per_second.onnxruntime"] == 20.0 and metrics["images_per_second.onnxruntime.bs1"] == 20.0
    assert "images_per_second.onnxruntime.bs4" not in metrics


def test_an_isolated_child_reports_a_users_mistake_on_one_line():
    from segbench.config.schema import SuiteConfig
    from segbench.deploy.speed import time_isolated
    from segbench.errors import UserError

    with pytest.raises(UserError, match="unknown model 'nosuchnet'"):
        time_isolated(SuiteConfig(models=["nosuchnet-resnet10t"]), "nosuchnet-resnet10t", (32, 32), CPU)


def test_gpu_query_parsing():
    from segbench.core.environment import fingerprint, gpu_state, parse_gpu_query

    state = parse_gpu_query("550.54.15, 1980, 2619, 1980, 2619, 700.00, Enabled, P0, 34")
    assert state == {"driver": "550.54.15", "sm_mhz": 1980.0, "memory_mhz": 2619.0, "max_sm_mhz": 1980.0,
                     "max_memory_mhz": 2619.0, "power_limit_w": 700.0, "persistence_mode": "Enabled",
                     "pstate": "P0", "temperature_c": 34.0}
    assert parse_gpu_query("535.1, [N/A], 1, 2, 3, [N/A], Disabled, P8, 40")["sm_mhz"] is None
    assert gpu_state(CPU) is None
    env = fingerprint(CPU)
    assert env["cudnn_benchmark"] == torch.backends.cudnn.benchmark and env["gpu_clocks"] is None
