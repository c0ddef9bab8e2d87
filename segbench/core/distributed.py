"""Data parallelism under ``torchrun``: one process per device, gloo on CPUs and NCCL on GPUs; only rank 0 writes.

Evaluation is exact: each rank takes one contiguous shard of the split, without the padding a DistributedSampler
adds (uneven shards are fine, since evaluation needs no collective per step), the int64 confusion matrices are
summed, and per-image statistics come back in the data set's order. Training splits the global batch across the
ranks under DistributedDataParallel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from segbench.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a job (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that writes results, checkpoints and MLflow runs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> World:
    """The world torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK), else a single process."""
    try:
        return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                     int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None


def device_for(world: World, device: torch.device) -> torch.device:
    """Each rank's own GPU (``cuda:LOCAL_RANK``) when the job runs on CUDA; the CPU stays the CPU."""
    if device.type == "cuda" and world.distributed:
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"rank {world.rank}: LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} "
                            "GPUs here; start at most one process per GPU (torchrun --nproc_per_node)")
        return torch.device("cuda", world.local_rank)
    return device


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the job's process group for the duration (nothing for a single process)."""
    if not world.distributed or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def shard(length: int, world: World) -> range:
    """The contiguous, unpadded part of ``range(length)`` that rank ``world.rank`` evaluates (ceil(N/W) each,
    the last ranks fewer or none)."""
    per_rank = -(-length // world.size)
    start = min(world.rank * per_rank, length)
    return range(start, min(start + per_rank, length))


def local_batch(global_batch: int, world: World, key: str) -> int:
    """Each rank's share of a global batch size, which the world size must divide."""
    if global_batch % world.size:
        raise UserError(f"{key}={global_batch} is the global batch and must be divisible by the world size "
                        f"({world.size} processes)")
    return global_batch // world.size


def same_as_rank0(model: torch.nn.Module) -> None:
    """Give every rank rank 0's weights and buffers: DDP keeps parameters in step, but each rank updates its own
    batch-norm statistics in its last forward pass, and evaluation (and the checkpoint) must see one model."""
    if dist.is_initialized():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (a list of one for a single process)."""
    if not dist.is_initialized():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def gather_rows(array: np.ndarray) -> np.ndarray:
    """The rows of every rank's ``array`` stacked in rank order: with contiguous shards, the data set's order."""
    return np.concatenate(gather(array), axis=0)
