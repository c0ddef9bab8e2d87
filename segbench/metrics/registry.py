"""The metric registry: every reported number, its definition, the tool whose number it equals, and its accumulator.

``register_accumulator`` on an accumulator class registers the numbers it declares in ``metrics``. ``equals`` names the
tool and setting that gives the same number (``tool`` is its PyPI distribution, and a test in
tests/test_reference_tools.py runs that tool on hard cases), or says "definition of ..." where the reference is a
paper or code not on PyPI (``tool`` empty; the test checks hand-computed values).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, TypeVar

from segbench.core.registry import Registry

A = TypeVar("A", bound=type)


@dataclass(frozen=True)
class MetricEntry:
    """One reported number: what it is, how it is aggregated, which tool's number it equals, who computes it."""

    name: str
    definition: str
    convention: str  # accumulation and absent/empty-case policy
    equals: str  # the tool and setting whose number it reproduces, or "definition of <reference>"
    tool: str = ""  # the PyPI distribution named in ``equals`` (tests run it); empty for "definition of"
    tolerance: str = "exact"  # what the reference test holds: exact (1e-12), 1e-6, or float32 in the reference
    unit: str = "fraction"  # fraction (shown and gated in percent / percentage points), pixels, or spacing units
    higher_is_better: bool = True
    per_image: bool = False  # a mean of per-image terms: bootstrap intervals resample them
    accumulator: Any = None  # the Accumulator class that computes it
    origin: dict | None = None  # a user's metric: its module, file and sha256, package and version

    @property
    def scale(self) -> float:
        """Factor from the stored value to the shown (and gated) one: 100 for fractions."""
        return 100.0 if self.unit == "fraction" else 1.0

    def describe(self) -> str:
        direction = "" if self.higher_is_better else "; lower is better"
        reference = self.equals if self.equals.startswith("definition of") else f"= {self.equals}"
        return f"{self.definition} [{self.convention}; {reference}; {self.unit}{direction}]"


REGISTRY: Registry[MetricEntry] = Registry("metric")
_ORDER: list[type] = []  # accumulator classes in registration order (the passport computes them in this order)


def register_accumulator(accumulator: A, *, every_evaluation: bool = True) -> A:
    """Class decorator: register the numbers ``accumulator.metrics`` declares (MetricEntry objects, or dicts of
    their fields for accumulators defined where this module cannot be imported). ``every_evaluation``: the passport
    builds it for every evaluation (its ``build`` may decline); False for a data set's own metrics."""
    if accumulator in _ORDER or any(e.accumulator is accumulator for _, e in REGISTRY.items()):
        return accumulator
    for declared in accumulator.metrics:
        entry = MetricEntry(**declared) if isinstance(declared, dict) else declared
        REGISTRY.register(entry.name, replace(entry, accumulator=accumulator))
    if every_evaluation:
        _ORDER.append(accumulator)
    return accumulator


def register_entries(entries: tuple[MetricEntry, ...]) -> None:
    """Register numbers that no accumulator computes (a model's robustness, from several evaluations)."""
    for entry in entries:
        if entry.name not in REGISTRY:
            REGISTRY.register(entry.name, entry)


def register_data_set_metrics() -> None:
    """Register the metrics the registered data sets provide (``DatasetEntry.metrics``)."""
    from segbench.data.registry import DATASETS

    for _, entry in DATASETS.items():
        for accumulator in entry.metrics:
            register_accumulator(accumulator, every_evaluation=False)


def accumulators() -> list[type]:
    """The accumulator classes of every evaluation, in registration order (data sets' own ones apart)."""
    return list(_ORDER)


def definitions(names) -> dict[str, dict]:
    """results.json's ``metric_definitions`` for the registered metrics among ``names``."""
    names = set(names)
    return {name: {"definition": e.definition, "convention": e.convention, "equals": e.equals, "unit": e.unit,
                   "higher_is_better": e.higher_is_better} | ({"origin": e.origin} if e.origin else {})
            for name, e in REGISTRY.items() if name in names}
