"""segbench: benchmarking and model-zoo evaluation for semantic segmentation.

The Python API (``segbench.run``, ``segbench.bench``, ``segbench.evaluate``, ``segbench.read_results``,
``segbench.gate``, ``segbench.report``, ``segbench.Results``, ``segbench.register_model``,
``segbench.register_dataset``, ``segbench.register_metric``, ``segbench.UserError``) is imported on first use, so
``import segbench`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "run": "segbench.api.suites",
    "bench": "segbench.api.suites",
    "evaluate": "segbench.api.evaluate",
    "Results": "segbench.api.results",
    "read_results": "segbench.api.results",
    "gate": "segbench.api.results",
    "report": "segbench.api.results",
    "register_model": "segbench.api.register",
    "register_dataset": "segbench.api.register",
    "register_metric": "segbench.api.register",
    "UserError": "segbench.errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'segbench' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
