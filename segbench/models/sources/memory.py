"""Models a user holds in memory (a notebook, a training script's validation hook), ``memory:NAME``: what
``segbench.evaluate(model, ...)`` hands to the suite's evaluation, as a published model with its classes and
normalisation. Entries live for the process; nothing is written or downloaded."""

from __future__ import annotations

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


HELD: dict[str, Held] = {}


def hold(name: str, held: Held) -> str:
    """Keep ``held`` under ``name`` for this process; return the model name a suite uses (``memory:NAME``)."""
    HELD[name] = held
    return f"{NAME}:{name}"


def check(name: str) -> None:
    if name not in HELD:
        raise UserError(f"memory:{name}: no model held under that name (memory: models come from "
                        "segbench.evaluate(model, ...), not from a suite file)")


def logits_of(output: Any) -> Any:
    """The logits of a model's output: a tensor, or the ``out``/``logits`` entry of a dict or an object."""
    if isinstance(output, dict):
        for key in ("out", "logits"):
            if key in output:
                return output[key]
    return getattr(output, "logits", output)


def resolve(name: str, weights: str | None) -> Resolved:
    check(name)
    if weights is not None:
        raise UserError(f"weights.memory:{name}: an in-memory model brings its own weights")
    held = HELD[name]
    return Resolved(NAME, name, held.classes, held.num_outputs, held.normalisation, {"kind": "memory"},
                    lambda accepted=False: (held.module, logits_of))


def fetch(name: str) -> str:
    raise UserError(f"memory:{name}: an in-memory model has nothing to download")


SOURCE = Source(NAME, "models held in memory by segbench.evaluate", check, resolve, fetch, lambda: [])
