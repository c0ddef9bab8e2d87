"""What every external model source provides (``Source``), what it resolves a name to (``Resolved``), and the safe
reading of their checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segbench.errors import UserError
from segbench.models.checkpoints import check_fit, read_state_dict, weights_file
from segbench.models.normalisation import Normalisation


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


def read_state(path: str | Path) -> dict:
    """The tensors of a local checkpoint (safely; see segbench.models.checkpoints), without the ``net.`` prefix that
    segbench's wrapper adds when it saves a fine-tuned external model."""
    file = weights_file(Path(path))
    with open(file, "rb") as f:
        head = f.read(4)
    if file.suffix != ".safetensors" and not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise UserError(f"'{file}' is not a checkpoint file (expected safetensors, or a state dict saved with "
                        "torch.save)")
    state = read_state_dict(file)
    if state and all(k.startswith("net.") for k in state):
        state = {k[len("net."):]: v for k, v in state.items()}
    return state


def load_state(net: Any, state: dict, origin: str, model: str) -> None:
    """Load ``state`` into ``net``; every tensor must match by name and shape."""
    check_fit(net, state, f"{origin} (for {model})")
    net.load_state_dict(state, strict=False)
