"""The ONNX backend: export with torch.onnx, run with ONNX Runtime.

Exporter. torch 2.14's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, needs onnxscript) exports every
model segbench builds (smp's and segbench's own architectures on timm backbones) with a dynamic batch axis;
the legacy TorchScript exporter is 10x faster but cannot export PSPNet's adaptive pooling (output sizes that
do not divide the input), so dynamo is tried first and TorchScript only if dynamo fails. The batch axis is
always dynamic. With ``dynamic_spatial`` (evaluation: images of any size) height and width are exported dynamic
too, and the export is checked against eager on a second size; where it does not match (or cannot be
exported), one static-size export per image size is made instead.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from segbench.deploy.deployed import BackendUnavailable, Deployed
from segbench.models.sources.runners import open_session, provider_for, run_session, session_options

EXPORTERS = ("dynamo", "torchscript")
TORCHSCRIPT_OPSET = 17
INPUT, OUTPUT = "images", "logits"
CHECK_TOLERANCE = 1e-3  # largest |logit difference| (relative to the largest logit) a dynamic export may show


def onnxruntime_unavailable(device: torch.device, precision: str) -> str | None:
    """Why ONNX Runtime cannot run here, or None."""
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed (pip install 'segbench[deploy]')"
    if precision != "fp32":
        return f"the onnxruntime backend runs the fp32 export only, not {precision}"
    if device.type == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "device is CUDA but onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)"
    if device.type not in ("cpu", "cuda"):
        return f"no ONNX Runtime execution provider for device {device.type} in segbench"
    return None


@dataclass
class OnnxExport:
    """One exported model: its bytes and how they were made."""

    data: bytes
    exporter: str  # dynamo or torchscript
    opset: int
    input_shape: list[int]  # the example's shape
    dynamic_axes: list[str]  # batch, and height and width when exported dynamic
    seconds: float
    notes: list[str] = field(default_factory=list)  # exporters that failed first, and why

    def describe(self) -> dict[str, Any]:
        return {"exporter": self.exporter, "opset": self.opset, "input_shape": self.input_shape,
                "dynamic_axes": self.dynamic_axes, "export_seconds": round(self.seconds, 3),
                "onnx_bytes": len(self.data), "export_notes": self.notes}


def _export_dynamo(model: nn.Module, example: torch.Tensor, dynamic_spatial: bool) -> bytes:
    from torch.export import Dim

    axes = {0: Dim.DYNAMIC} | ({2: Dim.DYNAMIC, 3: Dim.DYNAMIC} if dynamic_spatial else {})
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                dynamic_shapes=(axes,), verbose=False, report=False)
    return program.model_proto.SerializeToString()


def _export_torchscript(model: nn.Module, example: torch.Tensor, dynamic_spatial: bool) -> bytes:
    axes = {0: "batch"} | ({2: "height", 3: "width"} if dynamic_spatial else {})
    buffer = io.BytesIO()
    torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=TORCHSCRIPT_OPSET,
                      input_names=[INPUT], output_names=[OUTPUT], dynamic_axes={INPUT: axes, OUTPUT: axes})
    return buffer.getvalue()


def export_onnx(model: nn.Module, example: torch.Tensor, dynamic_spatial: bool = False) -> OnnxExport:
    """Export ``model`` (eval mode, on its device) for inputs like ``example``; BackendUnavailable if no
    exporter can."""
    import onnx

    model.eval()
    # a batch of 2: the dynamo exporter specialises a dimension of size 1 to a constant
    sample = example[:1].detach().float().contiguous().repeat(2, 1, 1, 1)
    notes = []
    for exporter in EXPORTERS:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                export = _export_dynamo if exporter == "dynamo" else _export_torchscript
                data = export(model, sample, dynamic_spatial)
        except Exception as exc:  # an operator or a shape the exporter cannot handle: try the next one
            notes.append(f"{exporter}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}")
            continue
        mismatch = _differs_from_eager(model, sample, data)
        if mismatch:
            notes.append(f"{exporter}: {mismatch}")
            continue
        opset = next((o.version for o in onnx.load_from_string(data).opset_import if o.domain in ("", "ai.onnx")),
                     -1)
        axes = ["batch"] + (["height", "width"] if dynamic_spatial else [])
        return OnnxExport(data, exporter, opset, list(example.shape), axes, time.perf_counter() - start, notes)
    raise BackendUnavailable("ONNX export failed: " + "; ".join(notes))


def _differs_from_eager(model: nn.Module, sample: torch.Tensor, data: bytes) -> str | None:
    """Why the exported model does not compute what ``model`` computes on inputs like ``sample`` (None: it does). A
    tracing exporter can bake a value that depends on the input into a constant, and still succeed: the check
    uses an input of its own, not the one exported with."""
    try:
        import onnxruntime
    except ImportError:  # nothing to check with (the TensorRT route without onnxruntime)
        return None
    try:
        probe = torch.randn(sample.shape, generator=torch.Generator().manual_seed(0)).to(sample.device)
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = session.run([OUTPUT], {INPUT: probe.cpu().numpy()})[0]
        with torch.no_grad():
            reference = model(probe).float().cpu().numpy()
    except Exception as exc:
        return f"the export does not run: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
    if got.shape != reference.shape:
        return f"the export returns shape {list(got.shape)}, eager {list(reference.shape)}"
    difference = float(np.abs(got - reference).max())
    if difference > CHECK_TOLERANCE * max(1.0, float(np.abs(reference).max())):
        return f"the export differs from eager by up to {difference:.3g}"
    return None


class OrtRunner:
    """ONNX Runtime sessions for one model: one for every size when the export is dynamic, else one per size."""

    def __init__(self, model: nn.Module, example: torch.Tensor, dynamic_spatial: bool) -> None:
        self.model, self.device = model, example.device
        self.provider = provider_for(self.device)
        self.options = session_options()  # as many threads as eager PyTorch uses
        self.sessions: dict[tuple[int, int] | None, Any] = {}
        self.exports: list[OnnxExport] = []
        self.details: dict[str, Any] = {}  # describe(), kept up to date as exports are added
        self.notes: list[str] = []  # why the dynamic export was not kept
        self._output_shapes: dict[tuple, list[int]] = {}
        if dynamic_spatial and self._dynamic_works(example):
            return
        self._add(tuple(example.shape[-2:]), example)

    def _session(self, data: bytes) -> Any:
        return open_session(data, self.device, self.options)

    def _add(self, key: tuple[int, int] | None, example: torch.Tensor) -> Any:
        export = export_onnx(self.model, example, dynamic_spatial=key is None)
        self.exports.append(export)
        self.sessions[key] = self._session(export.data)
        self.details.update(export.describe() | {
            "export_notes": self.notes + export.notes, "exports": len(self.exports),
            "threads": self.options.intra_op_num_threads, "onnxruntime": __import__("onnxruntime").__version__})
        return self.sessions[key]

    def _dynamic_works(self, example: torch.Tensor) -> bool:
        """Export with dynamic height and width; keep it if it matches eager on a second size."""
        try:
            self._add(None, example)
        except BackendUnavailable as exc:
            self.notes.append(f"dynamic height and width: {exc.reason}")
            return False
        height, width = example.shape[-2:]
        probe = torch.randn(1, example.shape[1], height + 32, width + 32, device=self.device)
        try:
            with torch.no_grad():
                reference = self.model.to(self.device).eval()(probe)
            got = self(probe)
            scale = max(1.0, float(reference.abs().max()))
            if got.shape == reference.shape and float((got - reference).abs().max()) <= CHECK_TOLERANCE * scale:
                return True
            note = "dynamic height and width do not match eager on a second size"
        except Exception as exc:  # ONNX Runtime refuses the second size
            note = f"dynamic height and width fail on a second size ({type(exc).__name__})"
        self.sessions.clear()
        self.exports.clear()
        self._output_shapes.clear()
        self.notes.append(note + ": one export per image size instead")
        return False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        session = self.sessions.get(None) or self.sessions.get(tuple(images.shape[-2:]))
        if session is None:
            session = self._add(tuple(images.shape[-2:]), images)
        return run_session(session, images, (INPUT, OUTPUT), self._output_shapes)


def build_onnxruntime(model: nn.Module, example: torch.Tensor, precision: str, channels_last: bool,
                      dynamic_spatial: bool) -> Deployed:
    """``model`` exported to ONNX and run by ONNX Runtime on ``example``'s device (fp32; memory format: ONNX
    Runtime's own)."""
    runner = OrtRunner(model, example, dynamic_spatial)
    return Deployed("onnxruntime", runner, "fp32", provider=runner.provider, torch_managed=False,
                    details=runner.details)
