"""Throughput of a model's forward pass, measured so that the figure can be signed.

Method (after timm's benchmark.py, with MMSegmentation's known mistakes avoided): the input is
already on the device; warm-up iterations (and optionally seconds) are not timed; each timed
iteration is bracketed by device synchronisation (CUDA events on a GPU); images per second are
*samples* per second; ``repeats`` independent timed blocks give a median and a spread; an
out-of-memory error halves the batch and says so.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
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
    repeats: int
    params: int
    gflops_per_image: float | None
    peak_memory_mb: float | None
    memory_measure: str  # cuda_max_allocated | cpu_peak_rss_growth
    device: str
    precision: str = "fp32"
    memory_format: str = "contiguous"
    compile: bool = False
    timer: str = "perf_counter"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """An autocast context for bf16/fp16 (a no-op for fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _timed_block(model: nn.Module, batch: torch.Tensor, device: torch.device, iters: int) -> list[float]:
    """Seconds per forward pass for ``iters`` passes."""
    if device.type == "cuda":
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


def measure_throughput(model: nn.Module, input_shape: tuple[int, int, int, int], device: torch.device, *,
                       warmup: int = 5, warmup_seconds: float = 0.0, iters: int = 20, repeats: int = 3,
                       precision: str = "fp32", channels_last: bool = False, compile: bool = False) -> SpeedResult:
    """Images per second of ``model`` on random input of ``input_shape`` (N, C, H, W) on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got '{precision}'")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device).eval().to(memory_format=memory_format)
    gflops = count_flops_per_image(model, tuple(input_shape[1:]), device)
    runner = torch.compile(model) if compile else model
    requested, batch_size, halvings = input_shape[0], input_shape[0], 0
    while True:
        try:
            batch = torch.randn(batch_size, *input_shape[1:], device=device).to(memory_format=memory_format)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rss_before = _peak_rss_mb()
            with torch.no_grad(), autocast(device, precision):
                start = _clock()
                done = 0
                while done < warmup or _clock() - start < warmup_seconds:
                    runner(batch)
                    done += 1
                blocks = [_timed_block(runner, batch, device, iters) for _ in range(repeats)]
            break
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not _is_oom(exc) or batch_size == 1:
                raise
            batch_size, halvings = batch_size // 2, halvings + 1
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if device.type == "cuda":
        peak, measure = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
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
        repeats=repeats,
        params=count_parameters(model),
        gflops_per_image=gflops / 1e9 if gflops is not None else None,
        peak_memory_mb=peak,
        memory_measure=measure,
        device=str(device),
        precision=precision,
        memory_format="channels_last" if channels_last else "contiguous",
        compile=compile,
        timer="cuda_event" if device.type == "cuda" else "perf_counter",
    )
