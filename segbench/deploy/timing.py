"""Throughput of a model's forward pass, measured so that the figure can be signed.

Method (after timm's benchmark.py, with MMSegmentation's known mistakes avoided): the model is deployed
on a backend (segbench.deploy.backends: eager, torch.compile, ONNX Runtime, TensorRT); the input is already on the
device; warm-up iterations (and optionally seconds) are not timed; each timed iteration is bracketed by device
synchronisation (CUDA events on a GPU for backends that run on torch's stream); images per second are
*samples* per second; timed blocks of ``iters`` iterations, at least ``repeats`` of them and at least
``min_seconds`` of timed time, give a median and a spread. An out-of-memory error is a UserError naming the
batch size, or, when asked for (``oom="halve"``), halves the batch and says so.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from segbench.core.environment import synchronize
from segbench.deploy.backends import PRECISIONS, Deployed, deploy
from segbench.errors import UserError

OOM_POLICIES = ("fail", "halve")
_clock = time.perf_counter  # the host timer; tests replace it with a fake one


@dataclass
class SpeedResult:
    """One throughput figure and everything needed to compare it with another."""

    images_per_second: float  # median over repeats
    images_per_second_repeats: list[float]
    spread: float  # (max - min) / median over repeats
    batch_size: int  # as measured (after any out-of-memory halving)
    requested_batch_size: int
    oom_halvings: int
    input_shape: tuple[int, ...]  # (batch, channels, height, width)
    latency_ms_p50: float  # per batch, over all timed iterations
    latency_ms_p90: float
    latency_ms_p99: float
    warmup_iters: int
    timed_iters: int  # per repeat
    repeats: int  # timed blocks (at least the requested repeats; more when min_seconds asked for them)
    params: int
    gflops_per_image: float | None
    peak_memory_mb: float | None
    memory_measure: str  # cuda_max_allocated | cpu_peak_rss_growth
    device: str
    precision: str = "fp32"
    memory_format: str = "contiguous"
    compile: bool = False  # backend == "compile" (kept for readers of older results)
    timer: str = "perf_counter"
    backend: str = "eager"
    provider: str = "torch"
    backend_details: dict = field(default_factory=dict)  # Deployed.describe(): exporter, opset, shapes, ...
    min_seconds: float = 0.0  # the minimum timed duration asked for
    timed_seconds: float = 0.0  # the timed duration measured (all blocks)
    isolated: bool = False  # measured in a fresh process of its own
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops_per_image(model: nn.Module, image_shape: tuple[int, int, int], device: torch.device) -> float | None:
    """FLOPs of one forward pass on one image, by torch's own flop counter (None if it cannot count)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.zeros(1, *image_shape, device=device))
        return float(counter.get_total_flops())
    except Exception:  # a model with an operator the counter does not know
        return None


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _is_oom(exc: BaseException) -> bool:
    message = str(exc).lower()
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in message \
        or "failed to allocate memory" in message  # ONNX Runtime's wording


def _timed_block(model: Deployed, batch: torch.Tensor, device: torch.device, iters: int) -> list[float]:
    """Seconds per forward pass for ``iters`` passes."""
    if device.type == "cuda" and model.torch_managed:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        synchronize(device)
        for start, end in zip(starts, ends):
            start.record()
            model(batch)
            end.record()
        synchronize(device)
        return [s.elapsed_time(e) / 1000 for s, e in zip(starts, ends)]
    seconds = []
    for _ in range(iters):
        synchronize(device)
        t0 = _clock()
        model(batch)
        synchronize(device)
        seconds.append(_clock() - t0)
    return seconds


def _timed_blocks(model: Deployed, batch: torch.Tensor, device: torch.device, iters: int, repeats: int,
                  min_seconds: float) -> list[list[float]]:
    """Timed blocks of ``iters`` passes until there are ``repeats`` of them and ``min_seconds`` of timed time."""
    blocks: list[list[float]] = []
    while len(blocks) < repeats or sum(map(sum, blocks)) < min_seconds:
        blocks.append(_timed_block(model, batch, device, iters))
    return blocks


def measure_throughput(model: nn.Module, input_shape: tuple[int, int, int, int], device: torch.device, *,
                       warmup: int = 5, warmup_seconds: float = 0.0, iters: int = 20, repeats: int = 3,
                       min_seconds: float = 0.0, precision: str = "fp32", channels_last: bool = False,
                       backend: str = "eager", oom: str = "fail") -> SpeedResult:
    """Images per second of ``model`` deployed on ``backend`` on random input of ``input_shape`` (N, C, H, W) on
    ``device``. Raises BackendUnavailable when the backend cannot run here."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got '{precision}'")
    if oom not in OOM_POLICIES:
        raise ValueError(f"oom must be one of {OOM_POLICIES}, got '{oom}'")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device).eval().to(memory_format=memory_format)
    gflops = count_flops_per_image(model, tuple(input_shape[1:]), device)
    requested, batch_size, halvings = input_shape[0], input_shape[0], 0
    while True:
        try:
            batch = torch.randn(batch_size, *input_shape[1:], device=device).to(memory_format=memory_format)
            runner = deploy(backend, model, batch, precision=precision, channels_last=channels_last)
            if device.type == "cuda":  # peak memory of inference, not of building (exporting) the backend
                torch.cuda.reset_peak_memory_stats(device)
            rss_before = _peak_rss_mb()
            with torch.no_grad():
                start = _clock()
                done = 0
                while done < warmup or _clock() - start < warmup_seconds:
                    runner(batch)
                    done += 1
                blocks = _timed_blocks(runner, batch, device, iters, repeats, min_seconds)
            break
        except Exception as exc:
            if not _is_oom(exc):
                raise
            if oom == "fail" or batch_size == 1:
                shape = "x".join(map(str, input_shape[1:]))
                raise UserError(f"out of memory at batch size {batch_size} ({backend}, {precision}, input {shape} on "
                                f"{device}): lower bench.batch_sizes, or set bench.oom=halve to halve the batch "
                                "and record it") from None
            batch_size, halvings = batch_size // 2, halvings + 1
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if device.type == "cuda" and runner.torch_managed:
        peak, measure = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    elif device.type == "cuda":
        peak, measure = None, "not_measured"  # the backend allocates outside torch's allocator
    else:
        peak, measure = _peak_rss_mb() - rss_before, "cpu_peak_rss_growth"
    per_repeat = [batch_size * len(block) / sum(block) for block in blocks]
    median = statistics.median(per_repeat)
    ms = np.array([s for block in blocks for s in block]) * 1000
    return SpeedResult(
        images_per_second=median,
        images_per_second_repeats=per_repeat,
        spread=(max(per_repeat) - min(per_repeat)) / median,
        batch_size=batch_size,
        requested_batch_size=requested,
        oom_halvings=halvings,
        input_shape=(batch_size, *input_shape[1:]),
        latency_ms_p50=float(np.percentile(ms, 50)),
        latency_ms_p90=float(np.percentile(ms, 90)),
        latency_ms_p99=float(np.percentile(ms, 99)),
        warmup_iters=done,
        timed_iters=iters,
        repeats=len(blocks),
        params=count_parameters(model),
        gflops_per_image=gflops / 1e9 if gflops is not None else None,
        peak_memory_mb=peak,
        memory_measure=measure,
        device=str(device),
        precision=runner.precision,
        memory_format=runner.memory_format,
        compile=backend == "compile",
        timer="cuda_event" if device.type == "cuda" and runner.torch_managed else "perf_counter",
        backend=backend,
        provider=runner.provider,
        backend_details=runner.describe(),
        min_seconds=min_seconds,
        timed_seconds=float(sum(map(sum, blocks))),
    )
