"""Deployment backends: a model as it will be deployed (eager PyTorch, torch.compile, ONNX Runtime, TensorRT).

Each backend turns an ``nn.Module`` and an example input (on the device) into a ``Deployed`` callable on tensors
that returns logits, and says what it is (``describe()``). A backend that cannot run here (TensorRT without
CUDA, ONNX Runtime without its package, a precision it does not run) raises ``BackendUnavailable`` with the
reason; callers record the reason and go on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from segbench.core.registry import Registry
from segbench.deploy.deployed import PRECISIONS, BackendUnavailable, Deployed

__all__ = ["BACKENDS", "PRECISIONS", "BackendUnavailable", "Deployed", "DeployedModule", "autocast", "deploy"]

Builder = Callable[[nn.Module, torch.Tensor, str, bool, bool], Deployed]


@dataclass(frozen=True)
class Backend:
    """A registered backend: ``build(model, example, precision, channels_last, dynamic_spatial)``."""

    name: str
    description: str
    build: Builder
    unavailable: Callable[[torch.device, str], str | None]  # why it cannot run on (device, precision); None: it can


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """An autocast context for bf16/fp16 (a no-op for fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _torch_runner(module: Callable, device: torch.device, precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(device, precision):
            return module(images)

    return run


def _prepare(model: nn.Module, example: torch.Tensor, channels_last: bool) -> nn.Module:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(example.device).eval().to(memory_format=memory_format)


def _build_eager(model: nn.Module, example: torch.Tensor, precision: str, channels_last: bool,
                 dynamic_spatial: bool) -> Deployed:
    model = _prepare(model, example, channels_last)
    runtime = getattr(model, "runtime", None)  # a model that runs outside torch (an onnx: file) says who runs it
    return Deployed("eager", _torch_runner(model, example.device, precision), precision,
                    memory_format="channels_last" if channels_last else "contiguous",
                    provider=runtime(example.device) if runtime else "torch", torch_managed=runtime is None)


def _build_compile(model: nn.Module, example: torch.Tensor, precision: str, channels_last: bool,
                   dynamic_spatial: bool) -> Deployed:
    model = _prepare(model, example, channels_last)
    compiled = torch.compile(model, dynamic=True if dynamic_spatial else None)
    return Deployed("compile", _torch_runner(compiled, example.device, precision), precision,
                    memory_format="channels_last" if channels_last else "contiguous",
                    details={"mode": "default", "dynamic": dynamic_spatial or None})


def _always(device: torch.device, precision: str) -> str | None:
    return None


def _onnxruntime(*args: Any) -> Deployed:
    from segbench.deploy.onnx import build_onnxruntime

    return build_onnxruntime(*args)


def _onnxruntime_unavailable(device: torch.device, precision: str) -> str | None:
    from segbench.deploy.onnx import onnxruntime_unavailable

    return onnxruntime_unavailable(device, precision)


def _tensorrt(*args: Any) -> Deployed:
    from segbench.deploy.tensorrt import build_tensorrt

    return build_tensorrt(*args)


def _tensorrt_unavailable(device: torch.device, precision: str) -> str | None:
    from segbench.deploy.tensorrt import tensorrt_unavailable

    return tensorrt_unavailable(device, precision)


BACKENDS: Registry[Backend] = Registry("backend")
for _backend in (
    Backend("eager", "PyTorch eager mode (autocast for bf16/fp16)", _build_eager, _always),
    Backend("compile", "torch.compile (inductor), default mode", _build_compile, _always),
    Backend("onnxruntime", "torch.onnx export, ONNX Runtime (CUDA provider with onnxruntime-gpu on a GPU, else "
                           "CPU); fp32", _onnxruntime, _onnxruntime_unavailable),
    Backend("tensorrt", "TensorRT on a CUDA GPU (torch_tensorrt, else the tensorrt package from the ONNX export)",
            _tensorrt, _tensorrt_unavailable),
):
    BACKENDS.register(_backend.name, _backend)


def deploy(name: str, model: nn.Module, example: torch.Tensor, *, precision: str = "fp32",
           channels_last: bool = False, dynamic_spatial: bool = False) -> Deployed:
    """``model`` as backend ``name`` deploys it, for inputs like ``example`` (any batch size; any height and width
    too when ``dynamic_spatial``). Raises BackendUnavailable when the backend cannot run it here."""
    backend = BACKENDS.get(name)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got '{precision}'")
    reason = backend.unavailable(example.device, precision)
    if reason is not None:
        raise BackendUnavailable(reason)
    return backend.build(model, example, precision, channels_last, dynamic_spatial)


class DeployedModule(nn.Module):
    """A Deployed callable as an nn.Module, so that the evaluator runs it as it runs any model."""

    def __init__(self, deployed: Deployed, size_divisor: int) -> None:
        super().__init__()
        self.deployed = deployed
        self.size_divisor = size_divisor  # as the model it was made from: the evaluator pads images alike

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.deployed(images)
