"""The TensorRT backend, on a CUDA GPU: through torch_tensorrt when installed, else the tensorrt package building
an engine from segbench's ONNX export. One engine per input shape (TensorRT optimises for the shape it sees)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from segbench.deploy.deployed import BackendUnavailable, Deployed

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def tensorrt_unavailable(device: torch.device, precision: str) -> str | None:
    """Why TensorRT cannot run here, or None."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"TensorRT needs a CUDA GPU (device is {device.type})"
    if not (_installed("torch_tensorrt") or _installed("tensorrt")):
        return "neither torch_tensorrt nor tensorrt is installed (pip install torch-tensorrt)"
    return None


def _torch_tensorrt_engine(model: nn.Module, example: torch.Tensor, precision: str) -> Callable:
    import torch_tensorrt

    return torch_tensorrt.compile(model, ir="dynamo", inputs=[example.float().contiguous()],
                                  enabled_precisions={TORCH_DTYPES[precision]}, truncate_double=True)


def _tensorrt_engine(model: nn.Module, example: torch.Tensor, precision: str) -> Callable:
    """An engine built by the tensorrt package from the ONNX export, run on torch's CUDA stream."""
    import tensorrt as trt

    from segbench.deploy.onnx import INPUT, OUTPUT, export_onnx

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(export_onnx(model, example).data):
        raise BackendUnavailable(f"TensorRT cannot parse the ONNX export: {parser.get_error(0).desc()}")
    network.get_input(0).shape = list(example.shape)  # one engine per shape
    config = builder.create_builder_config()
    if precision != "fp32":
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable("TensorRT could not build an engine for this model")
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    context = engine.create_execution_context()
    out_shape = list(engine.get_tensor_shape(OUTPUT))

    def run(images: torch.Tensor) -> torch.Tensor:
        images = images.float().contiguous()
        out = torch.empty(out_shape, device=images.device, dtype=torch.float32)
        context.set_tensor_address(INPUT, images.data_ptr())
        context.set_tensor_address(OUTPUT, out.data_ptr())
        context.execute_async_v3(torch.cuda.current_stream(images.device).cuda_stream)
        return out

    return run


def build_tensorrt(model: nn.Module, example: torch.Tensor, precision: str, channels_last: bool,
                   dynamic_spatial: bool) -> Deployed:
    """``model`` as a TensorRT engine (rebuilt for each new input shape), fp32 inputs and outputs."""
    route = "torch_tensorrt" if _installed("torch_tensorrt") else "tensorrt"
    make = _torch_tensorrt_engine if route == "torch_tensorrt" else _tensorrt_engine
    model = model.to(example.device).eval()
    engines: dict[tuple[int, ...], Callable] = {}

    def run(images: torch.Tensor) -> torch.Tensor:
        shape = tuple(images.shape)
        if shape not in engines:
            engines[shape] = make(model, images, precision)
        with torch.no_grad():
            return engines[shape](images.float())

    run(example)  # build the first engine now, so that its build time is not timed
    details: dict[str, Any] = {"route": route, "input_shape": list(example.shape), "engines_per_shape": True}
    return Deployed("tensorrt", run, precision, provider=f"TensorRT ({route})", torch_managed=route == "torch_tensorrt",
                    details=details)
