"""Models a user holds in memory (a notebook, a training script's validation hook), ``memory:NAME``: what
``segbench.evaluate(model, ...)`` hands to the suite's evaluation, as a published model with its classes and
normalisation. A model is held only for the call that passed it (``holding``), in that call's own context: two
threads, or two asyncio tasks, each see their own models under the same name, and nothing keeps a module alive
after its call returns. Nothing is written or downloaded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from segbench.errors import UserError
from segbench.models.normalisation import Normalisation
from segbench.models.sources.base import Resolved, Source

NAME = "memory"


@dataclass
class Held:
    """One in-memory model: the module, the class names of its outputs (None: the suite's, by count), its number
    of outputs and the normalisation it expects."""

    module: Any
    classes: tuple[str, ...] | None
    num_outputs: int
    normalisation: Normalisation


# The models of the calls running in this context (thread or task); a fresh mapping per call, never shared.
_HELD: ContextVar[dict[str, Held] | None] = ContextVar("segbench_memory_models", default=None)


@contextmanager
def holding(name: str, held: Held) -> Iterator[str]:
    """Hold ``held`` under ``name`` for the ``with`` block, in this thread or task only; yield the model name a
    suite uses (``memory:NAME``). The module is let go when the block ends, however it ends."""
    token = _HELD.set({**(_HELD.get() or {}), name: held})
    try:
        yield f"{NAME}:{name}"
    finally:
        _HELD.reset(token)


def _held(name: str) -> Held:
    held = (_HELD.get() or {}).get(name)
    if held is None:
        raise UserError(f"memory:{name}: no model held under that name (memory: models come from "
                        "segbench.evaluate(model, ...), not from a suite file)")
    return held


def check(name: str) -> None:
    _held(name)


def logits_of(output: Any) -> Any:
    """The logits of a model's output: a tensor, or the ``out``/``logits`` entry of a dict or an object."""
    if isinstance(output, dict):
        for key in ("out", "logits"):
            if key in output:
                return output[key]
    return getattr(output, "logits", output)


def resolve(name: str, weights: str | None) -> Resolved:
    held = _held(name)
    if weights is not None:
        raise UserError(f"weights.memory:{name}: an in-memory model brings its own weights")
    module = held.module
    return Resolved(NAME, name, held.classes, held.num_outputs, held.normalisation, {"kind": "memory"},
                    lambda accepted=False: (module, logits_of))


def fetch(name: str) -> str:
    raise UserError(f"memory:{name}: an in-memory model has nothing to download")


SOURCE = Source(NAME, "models held in memory by segbench.evaluate", check, resolve, fetch, lambda: [])
