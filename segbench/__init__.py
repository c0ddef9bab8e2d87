"""segbench: benchmarking and model-zoo evaluation for semantic segmentation.

The Python API (``segbench.run``, ``segbench.bench``, ``segbench.evaluate``, ``segbench.read_results``,
``segbench.gate``, ``segbench.report``, ``segbench.Results``, ``segbench.register_model``,
``segbench.register_dataset``, ``segbench.register_metric``, ``segbench.UserError``) is imported on first use (by
name, from ``segbench.api``), so ``import segbench`` stays cheap.

Owns: ``errors`` (``UserError``, the one-line refusal, and the closest names: a place of its own at the top of the
flow), ``__main__`` (``python -m segbench``), and one package per concept, in the order of the flow: ``core``,
``config``, ``data``, ``metrics``, ``results``, ``models``, ``train``, ``deploy``, ``evaluation``, ``report``,
``gate``, ``pipeline``, ``zoo``, ``api`` and ``cli``.
Imports: segbench.cli
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

_API = {
    "run": "segbench.api.suites",
    "bench": "segbench.api.suites",
    "evaluate": "segbench.api.evaluate",
    "Results": "segbench.api.results",
    "read_results": "segbench.api.results",
    "register_model": "segbench.api.register",
    "register_dataset": "segbench.api.register",
    "register_metric": "segbench.api.register",
    "UserError": "segbench.errors",
}
_COMMANDS = ("gate", "report")  # API functions named like a subpackage (segbench/gate/, segbench/report/)
__all__ = ["__version__", *_API, *_COMMANDS]


class _Command:
    """``segbench.gate`` and ``segbench.report``: called, the API function (``segbench.api.results``); read for an
    attribute, the subpackage of the same name (``segbench.gate.compare``), so both keep working."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)

    @property
    def __wrapped__(self) -> Any:  # the function itself: help() and inspect.signature() show it
        return getattr(import_module("segbench.api.results"), self._name)

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self.__wrapped__.__doc__

    def __getattr__(self, name: str) -> Any:
        return getattr(import_module(f"segbench.{self._name}"), name)

    def __repr__(self) -> str:
        return f"<segbench.{self._name}: the API function; its package's modules as attributes>"


class _Package(ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _COMMANDS and isinstance(value, ModuleType):  # the import system binding the subpackage
            return  # it stays in sys.modules and behind the command's attributes
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
gate, report = _Command("gate"), _Command("report")


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'segbench' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
