"""Decorators that register a user's model, data-set layout and metric in segbench's own registries, with the same
early checks and one-line refusals as segbench's entries, and the origin of each recorded."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from segbench.core.plugins import origin_of
from segbench.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _check_name(kind: str, name: Any, taken: bool, where: str, builtin_note: str = "") -> None:
    if not isinstance(name, str) or not name or any(c.isspace() for c in name) or ":" in name:
        raise UserError(f"register_{kind}({name!r}) in {where}: expected a name without spaces or ':'")
    if taken:
        raise UserError(f"{kind} '{name}' is already registered{builtin_note}; {where} registers it again (choose "
                        "another name)")


def register_model(name: str, description: str = "") -> Callable[[F], F]:
    """Register a model builder under ``name``.

    The builder returns an ``nn.Module`` that maps ImageNet-normalised N x 3 x H x W images to N x K x H x W logits.
    It receives ``num_classes``; when it also takes a ``backbone`` parameter, the model is named
    ``NAME-BACKBONE`` like segbench's own architectures (``NAME-resnet18``) and receives the timm backbone's name.
    """

    def decorate(builder: F) -> F:
        from segbench.models.archs import ARCHITECTURES, Architecture

        origin = origin_of(builder)
        where = f"{origin.module}.{getattr(builder, '__name__', 'builder')}"
        existing = ARCHITECTURES.get(name) if name in ARCHITECTURES else None
        note = f" (by {existing.origin['module']})" if existing is not None and existing.origin else \
            " (by segbench)" if existing is not None else ""
        _check_name("model", name, existing is not None, where, note)
        if "-" in name:
            raise UserError(f"register_model('{name}') in {where}: a model name cannot hold '-' (it separates the "
                            "architecture from the backbone)")
        parameters = inspect.signature(builder).parameters
        if "num_classes" not in parameters:
            raise UserError(f"register_model('{name}') in {where}: the builder must take a 'num_classes' parameter")
        takes_backbone = "backbone" in parameters

        def build(backbone: str, num_classes: int) -> Any:
            return builder(backbone=backbone, num_classes=num_classes) if takes_backbone else \
                builder(num_classes=num_classes)

        text = description or (inspect.getdoc(builder) or "").split("\n")[0]
        ARCHITECTURES.register(name, Architecture(name, build, origin.label(), text, takes_backbone,
                                                  origin.to_dict() | {"builder": where}))
        return builder

    return decorate


def register_dataset(name: str) -> Callable[[T], T]:
    """Register a data-set layout under ``name``: a class or module with ``info(cfg) -> DatasetInfo``,
    ``build(cfg, split, seed) -> Dataset`` yielding (ImageNet-normalised image, int64 mask) pairs, an optional
    ``check(cfg, splits)`` that raises a UserError when the data are missing, and a ``DESCRIPTION``."""

    def decorate(layout: T) -> T:
        from segbench.data.base import DatasetEntry
        from segbench.data.registry import DATASETS

        origin = origin_of(layout)
        where = f"{origin.module}.{getattr(layout, '__name__', 'layout')}"
        _check_name("dataset", name, name in DATASETS, where)
        missing = [m for m in ("info", "build") if not callable(getattr(layout, m, None))]
        if missing:
            raise UserError(f"register_dataset('{name}') in {where}: the layout has no {' or '.join(missing)}() "
                            "(expected info(cfg), build(cfg, split, seed) and optionally check(cfg, splits))")
        description = getattr(layout, "DESCRIPTION", None) or (inspect.getdoc(layout) or "").split("\n")[0]
        DATASETS.register(name, DatasetEntry(name, layout.build, layout.info, f"[{origin.label()}] {description}",
                                             getattr(layout, "check", None)))
        return layout

    return decorate


def register_metric(name: str, definition: str = "", higher_is_better: bool = True, unit: str = "fraction",
                    convention: str = "") -> Callable[[T], T]:
    """Register a metric under ``name``: an ``segbench.metrics.protocol.Accumulator`` subclass that is updated on
    every batch, merged across processes (the tensors it names in ``summed`` are all-reduced, the lists in
    ``gathered`` joined), and whose ``compute`` returns ``Scores(metrics={name: value})``. It is computed in every
    evaluation, recorded in results.json with its definition and origin, shown in reports and gateable
    (``segbench gate --max-drop NAME=POINTS``). ``unit``: ``fraction`` (shown and gated in percent), ``pixels`` or
    another unit."""

    def decorate(accumulator: T) -> T:
        from segbench.metrics.protocol import Accumulator
        from segbench.metrics.registry import REGISTRY, MetricEntry
        from segbench.metrics.registry import register_accumulator as register

        origin = origin_of(accumulator)
        where = f"{origin.module}.{getattr(accumulator, '__name__', 'metric')}"
        _check_name("metric", name, name in REGISTRY, where)
        if not (isinstance(accumulator, type) and issubclass(accumulator, Accumulator)):
            raise UserError(f"register_metric('{name}') in {where}: expected a subclass of "
                            "segbench.metrics.protocol.Accumulator (update, merge, compute)")
        text = definition or (inspect.getdoc(accumulator) or name).split("\n")[0]
        accumulator.metrics = (MetricEntry(name, text, convention or "the user's accumulator, over the whole split",
                                           f"definition of {where} ({origin.label()})", unit=unit,
                                           higher_is_better=higher_is_better, origin=origin.to_dict()),)
        return register(accumulator)

    return decorate
