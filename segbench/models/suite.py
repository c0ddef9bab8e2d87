"""A suite's models checked before anything is created: each model planned by the factory with the suite's weights,
backbone weights and normalisation (``check_model``), and the suite's keys that name models or backbones
(``check_models``). The suite's models are then built by ``segbench.models.factory.build(..., cfg=cfg)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from segbench.errors import UserError
from segbench.models.factory import Model, build
from segbench.models.registry import parse_spec

if TYPE_CHECKING:
    from segbench.config.schema import SuiteConfig


def check_model(name: str, cfg: "SuiteConfig", classes: Sequence[str] | None = None) -> Model:
    """Prove, without side effects, that model ``name`` of the suite can be built as the suite says: its name, its
    weights and backbone weights (checksums, names and shapes on the meta device; tensors left uninitialised
    refused unless ``accept_uninitialised`` names the model), its classes against the suite's, its normalisation.
    A UserError otherwise. ``classes``: the suite's (read from its data set when not given)."""
    if classes is None:
        from segbench.data.registry import dataset_info

        classes = dataset_info(cfg.data).classes
    return build(name, classes, "plan", cfg=cfg)


def check_models(cfg: "SuiteConfig", classes: Sequence[str]) -> list[Model]:
    """``check_model`` for every model of the suite, and the suite's keys that name models or backbones
    (``normalisation``, ``accept_uninitialised``, ``eval.class_map``) checked against them."""
    from segbench.models.labelspace import unused_class_map_keys

    specs = [parse_spec(name, check=True) for name in cfg.models]
    backbones = {s.backbone for s in specs if s.backbone}
    for key in cfg.normalisation:
        if key not in cfg.models and key not in backbones:
            raise UserError(f"normalisation.{key}: no model of the suite is named '{key}' nor uses backbone '{key}' "
                            f"(models: {', '.join(cfg.models)})")
    for key in cfg.accept_uninitialised:
        if key not in cfg.models:
            raise UserError(f"accept_uninitialised: '{key}' is not a model of the suite "
                            f"(models: {', '.join(cfg.models)})")
    plans = [check_model(spec.name, cfg, classes) for spec in specs]
    class_map = cfg.eval.class_map or {}
    unused = unused_class_map_keys(class_map, classes, [p.mapping.model_classes for p in plans if p.mapping])
    if unused:
        raise UserError(f"eval.class_map: {', '.join(repr(k) for k in unused)} is not a class of the suite nor of "
                        f"any of its models (the suite's classes: {', '.join(classes[:10])}"
                        f"{', ...' if len(classes) > 10 else ''})")
    return plans

