"""Throughput of a model's forward pass, measured so that the figure can be signed.

Method (after timm's benchmark.py, with MMSegmentation's known mistakes avoided): the model is deployed
on a backend (segbench.deploy.backends: eager, torch.compile, ONNX Runtime, TensorRT); the input is already on the
device; warm-up iterations (and optionally seconds) are not timed; each timed iteration is bracketed by device
synchronisation (CUDA events on a GPU for backends that run on torch's stream); images per second are
*samples* per second; timed blocks of ``iters`` iterations, at least ``repeats`` of them and at least
``min_seconds`` of timed time, give a median and a spread; while their typical spread (the range less the most
extreme quarter at each end, relative to the median) stays above ``spread_target``, more blocks are timed, up to
``repeat_factor`` times the repeats. With a reference model, each timed block of the model
is followed by one of the reference (deployed alike, same input), so that the ratio of the two, block by block,
cancels a machine that is busier during one block than another (the gate compares these ratios). An
out-of-memory error is a UserError naming the batch size, or, when asked for (``oom="halve"``), halves the batch
and says so. Peak memory covers the model's warm-up and first timed block, before any reference runs.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from segbench.core.environment import synchronize
from segbench.deploy.backends import PRECISIONS, BackendUnavailable, Deployed, deploy
from segbench.errors import UserError
from segbench.results.speed import Speed

OOM_POLICIES = ("fail", "halve")
_clock = time.perf_counter  # the host timer; tests replace it with a fake one


@dataclass(frozen=True)
class TimingPlan:
    """How a model is deployed and timed: backend and numerics, warm-up, timed blocks, the out-of-memory policy."""

    backend: str = "eager"
    precision: str = "fp32"
    channels_last: bool = False
    warmup: int = 5  # untimed iterations first
    warmup_seconds: float = 0.0  # ... and at least this long
    iters: int = 20  # timed iterations per block
    repeats: int = 3  # timed blocks, at least
    min_seconds: float = 0.0  # timed time, at least (more blocks)
    spread_target: float = 0.10  # more blocks while the figures' typical_spread exceeds this ...
    repeat_factor: int = 3  # ... up to this many times ``repeats``
    oom: str = "fail"  # fail | halve

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got '{self.precision}'")
        if self.oom not in OOM_POLICIES:
            raise ValueError(f"oom must be one of {OOM_POLICIES}, got '{self.oom}'")

    @classmethod
    def from_bench(cls, bench, backend: str) -> TimingPlan:
        """The plan of a suite's ``bench`` settings (segbench.config.schema.BenchConfig) for one backend."""
        return cls(backend=backend, precision=bench.precision, channels_last=bench.channels_last,
                   warmup=bench.warmup, warmup_seconds=bench.warmup_seconds, iters=bench.iters,
                   repeats=bench.repeats, min_seconds=bench.min_seconds, oom=bench.oom)


@dataclass
class Reference:
    """A model timed alternately with the one measured: its name (as the results name it) and module."""

    name: str
    module: nn.Module


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


def spread(figures: list[float]) -> float:
    """(max - min) / median: 0 for identical figures."""
    return (max(figures) - min(figures)) / statistics.median(figures)


def typical_range(figures: list[float]) -> tuple[float, float]:
    """The range of the figures less the most extreme quarter at each end (none of fewer than 4): a few more
    repeats narrow it when one of them was disturbed, where the full range only grows."""
    ordered = sorted(figures)
    cut = len(ordered) // 4
    return ordered[cut], ordered[-1 - cut]


def typical_spread(figures: list[float]) -> float:
    """``typical_range`` relative to the median: what the timing decides more repeats by, and the gate's noise."""
    low, high = typical_range(figures)
    return (high - low) / statistics.median(figures)


def _per_second(blocks: list[list[float]], batch_size: int) -> list[float]:
    return [batch_size * len(block) / sum(block) for block in blocks]


def _more_blocks(plan: TimingPlan, blocks: list[list[float]], reference: list[list[float]]) -> bool:
    """Time another block: too few, too little time, or figures (ratios to the reference) that still disagree."""
    if len(blocks) < plan.repeats or sum(map(sum, blocks)) < plan.min_seconds:
        return True
    if len(blocks) >= plan.repeats * plan.repeat_factor:
        return False
    figures = _per_second(blocks, 1)
    if reference:
        figures = [mine / theirs for mine, theirs in zip(figures, _per_second(reference, 1))]
    return typical_spread(figures) > plan.spread_target


@dataclass
class _Measured:
    """What one attempt at a batch size measured."""

    runner: Deployed
    warmup_iters: int
    blocks: list[list[float]]  # seconds per pass, per block
    reference_blocks: list[list[float]]  # the reference's, one block after each of ours (empty without one)
    peak_memory_mb: float | None
    memory_measure: str


def _warm_up(runner: Deployed, batch: torch.Tensor, plan: TimingPlan) -> int:
    start, done = _clock(), 0
    while done < plan.warmup or _clock() - start < plan.warmup_seconds:
        runner(batch)
        done += 1
    return done


def _peak_memory(runner: Deployed, device: torch.device, rss_before: float) -> tuple[float | None, str]:
    if device.type == "cuda" and runner.torch_managed:
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    if device.type == "cuda":
        return None, "not_measured"  # the backend allocates outside torch's allocator
    return _peak_rss_mb() - rss_before, "cpu_peak_rss_growth"


@torch.no_grad()
def _measure(model: nn.Module, batch: torch.Tensor, device: torch.device, plan: TimingPlan,
             reference: Reference | None) -> _Measured:
    """Deploy, warm up and time ``model`` (alternating with ``reference``) at ``batch``'s size."""
    runner = deploy(plan.backend, model, batch, precision=plan.precision, channels_last=plan.channels_last)
    if device.type == "cuda":  # peak memory of inference, not of building (exporting) the backend
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _peak_rss_mb()
    warmup_iters = _warm_up(runner, batch, plan)
    blocks = [_timed_block(runner, batch, device, plan.iters)]
    peak, measure = _peak_memory(runner, device, rss_before)
    other, reference_blocks = None, []
    if reference is not None:
        try:
            other = deploy(plan.backend, reference.module.to(device).eval().to(memory_format=_memory_format(plan)),
                           batch, precision=plan.precision, channels_last=plan.channels_last)
        except BackendUnavailable:  # the model alone, as without a reference
            other = None
        if other is not None:
            _warm_up(other, batch, plan)
            reference_blocks.append(_timed_block(other, batch, device, plan.iters))
    while _more_blocks(plan, blocks, reference_blocks):
        blocks.append(_timed_block(runner, batch, device, plan.iters))
        if other is not None:
            reference_blocks.append(_timed_block(other, batch, device, plan.iters))
    return _Measured(runner, warmup_iters, blocks, reference_blocks, peak, measure)


def _memory_format(plan: TimingPlan) -> torch.memory_format:
    """The memory format of the plan's input and model."""
    return torch.channels_last if plan.channels_last else torch.contiguous_format


def _measure_within_memory(model: nn.Module, input_shape: tuple[int, int, int, int], device: torch.device,
                           plan: TimingPlan, reference: Reference | None) -> tuple[_Measured, int, int]:
    """``_measure`` at the requested batch size, or (``oom="halve"``) at the largest halving that fits; the
    measurement, its batch size and the number of halvings."""
    batch_size, halvings = input_shape[0], 0
    while True:
        try:
            batch = torch.randn(batch_size, *input_shape[1:], device=device).to(memory_format=_memory_format(plan))
            return _measure(model, batch, device, plan, reference), batch_size, halvings
        except Exception as exc:
            if not _is_oom(exc):
                raise
            if plan.oom == "fail" or batch_size == 1:
                shape = "x".join(map(str, input_shape[1:]))
                raise UserError(f"out of memory at batch size {batch_size} ({plan.backend}, {plan.precision}, input "
                                f"{shape} on {device}): lower bench.batch_sizes, or set bench.oom=halve to halve "
                                "the batch and record it") from None
            batch_size, halvings = batch_size // 2, halvings + 1
            if device.type == "cuda":
                torch.cuda.empty_cache()


def measure_throughput(model: nn.Module, input_shape: tuple[int, int, int, int], device: torch.device,
                       plan: TimingPlan | None = None, reference: Reference | None = None) -> Speed:
    """Images per second of ``model`` deployed and timed as ``plan`` says, on random input of ``input_shape``
    (N, C, H, W) on ``device``, with ``reference`` timed alternately when given. Raises BackendUnavailable when
    the backend cannot run here."""
    plan = plan or TimingPlan()
    model = model.to(device).eval().to(memory_format=_memory_format(plan))
    gflops = count_flops_per_image(model, tuple(input_shape[1:]), device)
    measured, batch_size, halvings = _measure_within_memory(model, input_shape, device, plan, reference)
    runner, blocks = measured.runner, measured.blocks
    per_repeat = _per_second(blocks, batch_size)
    ms = np.array([s for block in blocks for s in block]) * 1000
    return Speed(
        images_per_second=statistics.median(per_repeat),
        images_per_second_repeats=per_repeat,
        spread=spread(per_repeat),
        batch_size=batch_size,
        requested_batch_size=input_shape[0],
        oom_halvings=halvings,
        input_shape=[batch_size, *input_shape[1:]],
        latency_ms_p50=float(np.percentile(ms, 50)),
        latency_ms_p90=float(np.percentile(ms, 90)),
        latency_ms_p99=float(np.percentile(ms, 99)),
        warmup_iters=measured.warmup_iters,
        timed_iters=plan.iters,
        repeats=len(blocks),
        params=count_parameters(model),
        gflops_per_image=gflops / 1e9 if gflops is not None else None,
        peak_memory_mb=measured.peak_memory_mb,
        memory_measure=measured.memory_measure,
        device=str(device),
        precision=runner.precision,
        memory_format=runner.memory_format,
        compile=plan.backend == "compile",
        timer="cuda_event" if device.type == "cuda" and runner.torch_managed else "perf_counter",
        backend=plan.backend,
        provider=runner.provider,
        backend_details=runner.describe(),
        min_seconds=float(plan.min_seconds),
        timed_seconds=float(sum(map(sum, blocks))),
        isolated=False,
        reference_model=reference.name if measured.reference_blocks else None,
        reference_images_per_second_repeats=_per_second(measured.reference_blocks, batch_size)
        if measured.reference_blocks else None,
    )
