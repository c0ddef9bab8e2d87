"""The hardware and software fingerprint recorded with every result."""

from __future__ import annotations

import platform
import shutil
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch

import segbench

_PACKAGES = ("torch", "torchvision", "timm", "segmentation-models-pytorch", "mlflow", "numpy", "pandas")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, else MPS, else the CPU; other names are checked to exist."""
    from segbench.errors import UserError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' was asked for but CUDA is not available here; use device=auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device '{name}' was asked for but MPS is not available here; use device=auto or cpu")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA, MPS), so that a timer reads when it is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the segbench source tree when it runs from a clone, else None."""
    root = Path(segbench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# nvidia-smi --query-gpu fields -> fingerprint keys (clocks in MHz, power in W)
GPU_QUERY = {"driver_version": "driver", "clocks.sm": "sm_mhz", "clocks.mem": "memory_mhz",
             "clocks.max.sm": "max_sm_mhz", "clocks.max.mem": "max_memory_mhz", "power.limit": "power_limit_w",
             "persistence_mode": "persistence_mode", "pstate": "pstate", "temperature.gpu": "temperature_c"}


def parse_gpu_query(line: str) -> dict:
    """One line of ``nvidia-smi --query-gpu=<GPU_QUERY> --format=csv,noheader,nounits`` as a dict (numbers as
    numbers, "[N/A]" as None)."""
    values = {}
    for key, raw in zip(GPU_QUERY.values(), (cell.strip() for cell in line.split(","))):
        try:
            values[key] = float(raw) if key != "driver" else raw
        except ValueError:
            values[key] = None if raw.startswith("[") or not raw else raw
    return values


def _gpu_id(device: torch.device) -> str:
    """The GPU as nvidia-smi names it: its UUID (CUDA_VISIBLE_DEVICES renumbers indices), else its index."""
    uuid = str(getattr(torch.cuda.get_device_properties(device), "uuid", "") or "")
    if not uuid:
        return str(device.index or 0)
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


def _pynvml_query(device: torch.device) -> dict | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device() if device.index is None
                                                   else device.index)
        sm, mem = pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM
        return {"driver": str(pynvml.nvmlSystemGetDriverVersion()),
                "sm_mhz": pynvml.nvmlDeviceGetClockInfo(handle, sm),
                "memory_mhz": pynvml.nvmlDeviceGetClockInfo(handle, mem),
                "max_sm_mhz": pynvml.nvmlDeviceGetMaxClockInfo(handle, sm),
                "max_memory_mhz": pynvml.nvmlDeviceGetMaxClockInfo(handle, mem),
                "power_limit_w": pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000}
    except Exception:  # NVML not usable here (no driver, no permission)
        return None


def gpu_state(device: torch.device) -> dict | None:
    """Driver and clocks of a CUDA device, through nvidia-smi, else pynvml; None on other devices or without
    either (``source`` says which answered)."""
    if device.type != "cuda":
        return None
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(GPU_QUERY)}", "--format=csv,noheader,nounits",
                                  "-i", _gpu_id(device)], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return parse_gpu_query(out.stdout.strip().splitlines()[0]) | {"source": "nvidia-smi"}
        except (OSError, subprocess.TimeoutExpired):
            pass
    state = _pynvml_query(device)
    return state | {"source": "pynvml"} if state else None


def fingerprint(device: torch.device) -> dict:
    """Versions, device and CPU facts that make a number reproducible."""
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    info = {
        "segbench": segbench.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": str(device),
        "device_name": cpu_model(),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    info["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    gpu = gpu_state(device)
    info["gpu_driver"] = gpu.pop("driver", None) if gpu else None
    info["gpu_clocks"] = gpu
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info
