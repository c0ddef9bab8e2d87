"""Sweeps run as job arrays: ``shard=I/N`` runs a fixed share of a suite's models, ``shard=auto`` reads the share
from SLURM (``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``) or a Kubernetes Indexed Job
(``JOB_COMPLETION_INDEX``, with ``SEGBENCH_SHARD_COUNT``). The shards of one sweep share a sweep id
(``SEGBENCH_SWEEP``, else ``SLURM_ARRAY_JOB_ID``, else the suite's hash and the shard count), recorded with
their results and in MLflow, so that ``segbench report`` puts them in one leaderboard.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from segbench.errors import UserError

AUTO = "auto"
T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (from 0) of ``count`` of sweep ``sweep``."""

    index: int
    count: int
    sweep: str

    def select(self, models: Sequence[T]) -> list[T]:
        """This shard's models: every ``count``-th of the suite's, starting at ``index`` (the same on every
        machine, and spread evenly when the suite lists similar models together)."""
        return list(models[self.index::self.count])


def _integer(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f"shard: {what} must be an integer, got '{value}'") from None


def _from_environment(env: Mapping[str, str]) -> tuple[int, int]:
    if "SLURM_ARRAY_TASK_ID" in env:
        if "SLURM_ARRAY_TASK_COUNT" not in env:
            raise UserError("shard=auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")
        first = _integer(env.get("SLURM_ARRAY_TASK_MIN", "0"), "SLURM_ARRAY_TASK_MIN")
        task = _integer(env["SLURM_ARRAY_TASK_ID"], "SLURM_ARRAY_TASK_ID")
        return task - first, _integer(env["SLURM_ARRAY_TASK_COUNT"], "SLURM_ARRAY_TASK_COUNT")
    if "JOB_COMPLETION_INDEX" in env:
        if "SEGBENCH_SHARD_COUNT" not in env:
            raise UserError("shard=auto: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job); set "
                            "SEGBENCH_SHARD_COUNT to the job's completions")
        return (_integer(env["JOB_COMPLETION_INDEX"], "JOB_COMPLETION_INDEX"),
                _integer(env["SEGBENCH_SHARD_COUNT"], "SEGBENCH_SHARD_COUNT"))
    raise UserError("shard=auto: neither SLURM_ARRAY_TASK_ID (a SLURM job array) nor JOB_COMPLETION_INDEX "
                    "(a Kubernetes Indexed Job) is set; pass shard=I/N")


def parse_shard(value: str | None, suite_hash: str, env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard ``shard=`` names (``I/N`` with 0 <= I < N, or ``auto``), None for the whole suite."""
    if value is None:
        return None
    env = os.environ if env is None else env
    if value == AUTO:
        index, count = _from_environment(env)
    else:
        index_text, sep, count_text = value.partition("/")
        if not sep:
            raise UserError(f"shard: expected I/N (shard I of N, counted from 0) or auto, got '{value}'")
        index, count = _integer(index_text, "I"), _integer(count_text, "N")
    if not 0 <= index < count:
        raise UserError(f"shard: expected 0 <= I < N, got shard {index} of {count}")
    sweep = env.get("SEGBENCH_SWEEP") or env.get("SLURM_ARRAY_JOB_ID") or f"{suite_hash}-{count}"
    return Shard(index, count, sweep)
