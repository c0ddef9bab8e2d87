"""What every external model source provides (``Source``), what it resolves a name to (``Resolved``), and the safe
reading of their checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segbench.errors import UserError
from segbench.models.checkpoints import check_fit, read_state_dict, tensor_shapes, weights_file
from segbench.models.normalisation import Normalisation

SHOWN = 5  # tensor names listed in a refusal


@dataclass
class Resolved:
    """One external model, located and described, not yet built."""

    source: str
    name: str
    classes: tuple[str, ...] | None  # None: the checkpoint carries no class names
    num_outputs: int
    normalisation: Normalisation
    weights: dict[str, Any]  # where the weights come from, for the record
    build: Callable[[], Any] = field(repr=False)  # () -> (network with its weights, logits function)
    # () -> the model's tensors its weights leave uninitialised, found by name and shape on the meta device (no
    # memory, no weights read but the files' headers where the format allows); a UserError for a wrong shape
    verify: Callable[[], list[str]] = field(repr=False, default=lambda: [])
    size_divisor: int = 1  # what evaluation pads images to: 1 where the network takes any size

    @property
    def spec(self) -> str:
        return f"{self.source}:{self.name}"


@dataclass(frozen=True)
class Source:
    """A library of published models."""

    name: str
    description: str
    check: Callable[[str], None]  # raise a UserError if NAME is unknown, missing or of the wrong format
    resolve: Callable[[str, str | None], Resolved]  # (NAME, local weights file or None) -> Resolved
    fetch: Callable[[str], str]  # download NAME's published weights into the library's cache; say where
    names: Callable[[], list[tuple[str, str]]]  # (NAME, description) pairs for `segbench list models`


def split_name(spec: str) -> tuple[str, str] | None:
    """``("hf", "nvidia/segformer-b0")`` for ``hf:nvidia/segformer-b0``; None for an ``ARCH-BACKBONE`` name."""
    source, sep, name = spec.partition(":")
    return (source, name) if sep else None


def names(keys: list[str]) -> str:
    """A few tensor names for a one-line message."""
    shown = ", ".join(keys[:SHOWN])
    return shown + (f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")


def compare(own: dict[str, tuple[int, ...]], given: dict[str, tuple[int, ...]], origin: str, model: str,
            strict: bool = True) -> list[str]:
    """The model's tensors (``own``: name -> shape) that the weights (``given``) leave uninitialised; a UserError
    for tensors of another shape, and (``strict``) for tensors the model does not have."""
    own = {k: v for k, v in own.items() if not k.endswith("num_batches_tracked")}
    given = {k: v for k, v in given.items() if not k.endswith("num_batches_tracked")}
    wrong = [f"{k} {list(given[k])} vs {list(own[k])}" for k in sorted(own.keys() & given.keys())
             if tuple(own[k]) != tuple(given[k])]
    unexpected = sorted(given.keys() - own.keys()) if strict else []
    if wrong or unexpected:
        parts = ([f"{len(wrong)} tensors of another shape ({names(wrong)})"] if wrong else [])
        parts += ([f"{len(unexpected)} tensors it does not have ({names(unexpected)})"] if unexpected else [])
        raise UserError(f"{model}: the weights {origin} do not fit the model: {'; '.join(parts)}")
    return sorted(own.keys() - given.keys())


def own_shapes(net: Any) -> dict[str, tuple[int, ...]]:
    """Name -> shape of a network's state (built on the meta device)."""
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def state_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of a local checkpoint's tensors (see ``read_state``), from the header of a safetensors file."""
    file = weights_file(Path(path))
    _check_format(file)
    return _without_wrapper_prefix(tensor_shapes(file))


def _without_wrapper_prefix(state: dict) -> dict:
    """``state`` without the ``net.`` prefix that segbench's wrapper adds when it saves a fine-tuned external model."""
    return {k[len("net."):]: v for k, v in state.items()} if state and all(k.startswith("net.") for k in state) \
        else state


def _check_format(file: Path) -> None:
    with open(file, "rb") as f:
        head = f.read(4)
    if file.suffix != ".safetensors" and not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise UserError(f"'{file}' is not a checkpoint file (expected safetensors, or a state dict saved with "
                        "torch.save)")


def read_state(path: str | Path) -> dict:
    """The tensors of a local checkpoint (safely; see segbench.models.checkpoints), without the ``net.`` prefix that
    segbench's wrapper adds when it saves a fine-tuned external model."""
    file = weights_file(Path(path))
    _check_format(file)
    return _without_wrapper_prefix(read_state_dict(file))


def load_state(net: Any, state: dict, origin: str, model: str, accepted: bool = False) -> None:
    """Load ``state`` into ``net``; every tensor must match by name and shape (``accepted``: tensors ``state`` lacks
    keep their initial values, as ``verify`` found and the suite accepted)."""
    if accepted:
        compare(own_shapes(net), {k: tuple(v.shape) for k, v in state.items()}, origin, model)
    else:
        check_fit(net, state, f"{origin} (for {model})")
    net.load_state_dict(state, strict=False)
