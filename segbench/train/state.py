"""Training state for resume: the model, optimizer, scaler, iteration, every RNG and the loader's place, written
atomically and read back so that a resumed run continues exactly where it stopped (on the CPU, bit for bit).

The file is segbench's own (``torch.save`` of tensors and plain values) and is read with ``weights_only=True``:
nothing in it is unpickled as code."""

from __future__ import annotations

import io
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segbench.core.files import atomic_write

STATE_FILE = "state.pt"


def rng_states() -> dict[str, Any]:
    """Every global RNG's state: torch (CPU and each CUDA device), numpy, Python's ``random``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                                                          "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
              "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back what ``rng_states`` returned."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class LoaderCursor:
    """Batches of ``loader`` epoch after epoch, knowing its place: the epoch, the batches taken in it and the
    loader generator's state when the epoch began (which decides its order and its workers' seeds)."""

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader
        self.epoch, self.position = 0, 0
        self.epoch_generator: torch.Tensor | None = None
        self._batches: Iterator | None = None

    def _start_epoch(self) -> None:
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # a distributed sampler reshuffles each epoch
            sampler.set_epoch(self.epoch)
        generator = getattr(self.loader, "generator", None)
        if generator is not None:
            if self.epoch_generator is not None:
                generator.set_state(self.epoch_generator)
            self.epoch_generator = generator.get_state()
        self._batches = iter(self.loader)

    def __next__(self) -> Any:
        if self._batches is None:
            self._start_epoch()
        try:
            batch = next(self._batches)
        except StopIteration:
            self.epoch, self.position, self.epoch_generator = self.epoch + 1, 0, None
            self._start_epoch()
            batch = next(self._batches)
        self.position += 1
        return batch

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "epoch_generator": self.epoch_generator}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue at ``state``: the epoch begins again from its generator state and the batches already taken
        are drawn and dropped (the caller puts the global RNGs back afterwards)."""
        self.epoch, self.epoch_generator = state["epoch"], state["epoch_generator"]
        self._start_epoch()
        for _ in range(state["position"]):
            next(self._batches)
        self.position = state["position"]


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (readers see the old file or the new one, never half)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(path, buffer.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """Read a state written by ``save_state`` (tensors and plain values only)."""
    return torch.load(path, map_location="cpu", weights_only=True)
