"""What every deployment backend hands back (``Deployed``) and how it says it cannot run here
(``BackendUnavailable``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class BackendUnavailable(Exception):
    """A backend that cannot run this model here; ``reason`` says why (recorded, not fatal)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Deployed:
    """A model as deployed: call it on an N x C x H x W batch on the device to get N x K x H' x W' logits."""

    backend: str
    run: Callable[[torch.Tensor], torch.Tensor]
    precision: str = "fp32"
    provider: str = "torch"  # who executes it: torch, an ONNX Runtime execution provider, TensorRT
    memory_format: str = "contiguous"
    torch_managed: bool = True  # runs on torch's CUDA stream and allocator: CUDA events and peak memory see it
    details: dict[str, Any] = field(default_factory=dict)  # exporter, opset, input shapes, ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images)

    def describe(self) -> dict[str, Any]:
        """What runs: backend, precision, provider, memory format and the backend's own details."""
        return {"backend": self.backend, "precision": self.precision, "provider": self.provider,
                "memory_format": self.memory_format, **self.details}
