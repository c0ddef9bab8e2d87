"""Throughput of a model's forward pass: images per second after warm-up, device-synchronised."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from segbench.evaluate import synchronize


@dataclass
class SpeedResult:
    """One throughput figure and everything needed to compare it with another."""

    images_per_second: float
    batch_size: int
    input_shape: tuple[int, ...]  # (batch, channels, height, width)
    latency_ms_p50: float  # per batch
    latency_ms_p90: float
    latency_ms_p99: float
    warmup_iters: int
    timed_iters: int
    params: int
    device: str
    precision: str = "fp32"
    memory_format: str = "contiguous"
    compile: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def measure_throughput(model: nn.Module, input_shape: tuple[int, int, int, int], device: torch.device,
                       warmup: int = 5, iters: int = 20) -> SpeedResult:
    """Time ``iters`` forward passes of a random batch already on ``device``, after ``warmup`` untimed ones."""
    model.to(device).eval()
    batch = torch.randn(*input_shape, device=device)
    for _ in range(warmup):
        model(batch)
    latencies = []
    for _ in range(iters):
        synchronize(device)
        start = time.perf_counter()
        model(batch)
        synchronize(device)
        latencies.append(time.perf_counter() - start)
    ms = np.array(latencies) * 1000
    return SpeedResult(
        images_per_second=input_shape[0] * iters / float(np.sum(latencies)),
        batch_size=input_shape[0],
        input_shape=tuple(input_shape),
        latency_ms_p50=float(np.percentile(ms, 50)),
        latency_ms_p90=float(np.percentile(ms, 90)),
        latency_ms_p99=float(np.percentile(ms, 99)),
        warmup_iters=warmup,
        timed_iters=iters,
        params=count_parameters(model),
        device=str(device),
    )
