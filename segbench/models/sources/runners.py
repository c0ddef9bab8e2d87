"""Running an exported model file as a torch module: ONNX Runtime sessions (created here for the ``onnx:`` source and
for the ``onnxruntime`` deployment backend alike), and ``FileNetwork``, which feeds a loaded file the batches its
input shape allows.

A file whose batch axis is fixed (or bounded) is fed the evaluation's batches in chunks of that size, the last one
padded with zeros (each image's logits depend on that image only in inference mode), so ``eval.batch_size`` needs
no change; the padding rows are dropped. An exported file is evaluated and timed, never trained: ``train()`` refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from segbench.errors import UserError

ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def session_options() -> Any:
    """ONNX Runtime's options for segbench: all graph optimisations, as many threads as eager PyTorch uses."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def provider_for(device: torch.device) -> str:
    """The execution provider that runs on ``device``: CUDA's on a GPU, the CPU's otherwise."""
    return "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"


def open_session(model: bytes | str, device: torch.device, options: Any = None) -> Any:
    """An ONNX Runtime session of ``model`` (the file's bytes or its path) on ``device``'s execution provider."""
    import onnxruntime

    provider: Any = provider_for(device)
    if device.type == "cuda":
        provider = (provider, {"device_id": device.index or 0})
    return onnxruntime.InferenceSession(model, options or session_options(), providers=[provider])


def run_session(session: Any, images: torch.Tensor, names: tuple[str, str], output_shapes: dict[tuple, list[int]],
                dtype: Any = np.float32) -> torch.Tensor:
    """Run ``session`` on ``images`` (input and output ``names``); on a GPU without host copies, the input and
    output bound to torch CUDA tensors (``output_shapes`` remembers each input shape's output shape)."""
    input_name, output_name = names
    images = images.detach().to(torch.float16 if dtype == np.float16 else torch.float32).contiguous()
    if images.device.type != "cuda":
        return torch.from_numpy(session.run([output_name], {input_name: images.numpy()})[0]).float()
    index = images.device.index or 0
    binding = session.io_binding()
    binding.bind_input(input_name, "cuda", index, dtype, list(images.shape), images.data_ptr())
    key = (id(session), tuple(images.shape))
    if key not in output_shapes:  # the first call at a shape: let ONNX Runtime allocate, learn the shape
        binding.bind_output(output_name, "cuda", index)
        session.run_with_iobinding(binding)
        output_shapes[key] = list(binding.get_outputs()[0].shape())
        binding = session.io_binding()
        binding.bind_input(input_name, "cuda", index, dtype, list(images.shape), images.data_ptr())
    out = torch.empty(output_shapes[key], device=images.device, dtype=images.dtype)
    binding.bind_output(output_name, "cuda", index, dtype, list(out.shape), out.data_ptr())
    session.run_with_iobinding(binding)
    return out.float()


class OrtFile:
    """An ONNX file run by ONNX Runtime on the device of the images it is given (one session per device)."""

    def __init__(self, path: str, names: tuple[str, str], dtype: Any) -> None:
        self.path, self.names, self.dtype = path, names, dtype
        self.sessions: dict[str, Any] = {}
        self.output_shapes: dict[tuple, list[int]] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from torch.utils._python_dispatch import is_in_torch_dispatch_mode

        if is_in_torch_dispatch_mode():  # torch's FLOP counter: ONNX Runtime's work is not torch's to count
            raise RuntimeError("ONNX Runtime runs outside torch")
        device = self.runs_on(images.device)
        if str(device) not in self.sessions:
            self.sessions[str(device)] = open_session(self.path, device)
        out = run_session(self.sessions[str(device)], images.to(device), self.names, self.output_shapes, self.dtype)
        return out.to(images.device)

    @staticmethod
    def runs_on(device: torch.device) -> torch.device:
        """Where ONNX Runtime runs for images on ``device``: the CPU when it has no CUDA provider (the onnxruntime
        package rather than onnxruntime-gpu; images and logits are then copied)."""
        import onnxruntime

        if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return device
        return torch.device("cpu")

    def provider(self, device: torch.device) -> str:
        """The execution provider that runs images on ``device``."""
        return provider_for(self.runs_on(device))


class FileNetwork(nn.Module):
    """A loaded exported file as a module: ``run`` (a torch module, or a callable like ``OrtFile``) fed batches of
    at most ``max_batch`` images (``fixed_batch``: exactly that many, zero-padded), its first float output returned.
    """

    def __init__(self, spec: str, run: Callable[[torch.Tensor], Any], fixed_batch: int | None = None,
                 max_batch: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.inner = run if isinstance(run, nn.Module) else None  # moved by .to(); never put in training mode
        self.run = run if self.inner is None else None
        self.fixed_batch, self.max_batch = fixed_batch, fixed_batch or max_batch
        self.training = False

    @property
    def runtime(self) -> Callable[[torch.device], str] | None:
        """The ONNX Runtime execution provider that runs the file on a device (None: torch runs it)."""
        return self.run.provider if isinstance(self.run, OrtFile) else None

    def train(self, mode: bool = True) -> "FileNetwork":
        if mode:
            raise UserError(f"{self.spec}: an exported file is evaluated and timed, not trained: use `segbench eval` "
                            "or `segbench bench` (or train.enabled=false)")
        return self  # a torch.export module refuses eval(); it runs in inference mode as exported

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        run = self.inner if self.inner is not None else self.run
        count = images.shape[0]
        if self.fixed_batch is not None and count < self.fixed_batch:
            images = torch.cat([images, images.new_zeros(self.fixed_batch - count, *images.shape[1:])])
        return first_logits(run(images))[:count]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.max_batch is None or images.shape[0] <= self.max_batch:
            return self._forward(images)
        return torch.cat([self._forward(chunk) for chunk in images.split(self.max_batch)])


def first_logits(output: Any) -> torch.Tensor:
    """The logits among a network's outputs: the tensor itself, ``out`` of a dict (torchvision's), or the first
    tensor of a tuple or list."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        return first_logits(output["out"] if "out" in output else next(iter(output.values())))
    if isinstance(output, (tuple, list)) and output:
        return first_logits(output[0])
    raise TypeError(f"expected a tensor of logits, got {type(output).__name__}")
