"""A suite's models as its config names them: each model's weights, its backbone's weights and the input
normalisation those weights were trained with, planned and checked before anything is created (``check_model``,
``check_models``), then built (``load_suite_model``).

Normalisation, first that applies: ``normalisation.MODEL`` stated in the suite; the one a segbench checkpoint
folder records (``weights.MODEL=FOLDER``); ``normalisation.BACKBONE`` stated in the suite; for backbone weights,
the backbone's own timm ``pretrained_cfg`` mean and std (for ``timm`` and for a local file alike: a file of a
backbone is most likely a copy or a port of the weights timm publishes for it); for a published model, its
source's (``preprocessor_config.json``, torchvision's transforms, ...); else ImageNet's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench.errors import UserError
from segbench.models.archs import ARCHITECTURES
from segbench.models.normalisation import Normalisation, stated, timm_normalisation
from segbench.models.registry import ModelPlan, ModelSpec, check_user_model, parse_spec, plan_model

if TYPE_CHECKING:
    from torch import nn

    from segbench.config.schema import SuiteConfig
    from segbench.models.registry import BuiltModel


@dataclass(frozen=True)
class Chosen:
    """The normalisation a model is fed and the line that tells the user why (None: nothing worth saying)."""

    normalisation: Normalisation | None  # None: the source's own (published models) or ImageNet's
    note: str | None = None


def backbone_file(cfg: "SuiteConfig", backbone: str) -> tuple[Path, Normalisation]:
    """The file ``backbone_weights.BACKBONE`` names (timm's published weights for ``timm``) and the normalisation
    those weights were trained with by default: the backbone's timm ``pretrained_cfg`` statistics, ImageNet's where
    timm states none."""
    from segbench.models.pretrained import TIMM, published_backbone

    value = cfg.backbone_weights[backbone]
    if value == TIMM:
        published = published_backbone(backbone)
        return published.file, published.normalisation
    return Path(value), timm_normalisation(backbone) or Normalisation(
        origin=f"ImageNet (timm states no mean and std for {backbone})")


def choose_normalisation(spec: ModelSpec, cfg: "SuiteConfig") -> Chosen:
    """The normalisation ``spec``'s weights were trained with, by the order in the module docstring."""
    from segbench.models.checkpoints import recorded_normalisation

    given = cfg.normalisation
    weights = cfg.weights.get(spec.name)
    recorded = recorded_normalisation(Path(weights)) if weights is not None and Path(weights).exists() else None
    if spec.name in given:
        chosen = stated(given[spec.name], spec.name, spec.backbone or None)
        override = f" instead of the {recorded.describe()} its checkpoint records" if recorded else ""
        return Chosen(chosen, f"{spec.name}: input normalised with {chosen.describe()}{override}")
    if recorded is not None:
        return Chosen(recorded, None if recorded.is_imagenet else f"{spec.name}: input normalised with "
                                                                  f"{recorded.describe()}")
    if spec.external:
        return Chosen(None)
    if spec.backbone in given:
        chosen = stated(given[spec.backbone], spec.backbone, spec.backbone)
        return Chosen(chosen, f"{spec.name}: input normalised with {chosen.describe()}")
    if spec.backbone in cfg.backbone_weights:
        path, default = backbone_file(cfg, spec.backbone)
        if cfg.backbone_weights[spec.backbone] == "timm":
            return Chosen(default)
        return Chosen(default, f"{spec.name}: backbone weights '{path}' are fed {default.describe()}; if they were "
                               f"trained otherwise, state it with normalisation.{spec.backbone}")
    return Chosen(None)


def plan_suite_model(spec: ModelSpec | str, cfg: "SuiteConfig", classes: Sequence[str],
                     load_backbone: bool = True) -> tuple[ModelPlan, dict[str, Any]]:
    """The plan of one model of the suite, with its weights and normalisation, and the record of the weights it
    loads (``model``: the checkpoint file and sha256; ``backbone``: file, sha256, coverage, normalisation);
    ``load_backbone=False`` plans without the backbone weights (to check them separately)."""
    from segbench.models.checkpoints import describe_weights, load_backbone_weights

    spec = parse_spec(spec, check=True) if isinstance(spec, str) else spec
    chosen = choose_normalisation(spec, cfg)
    weights_path = cfg.weights.get(spec.name)
    record: dict[str, Any] = {"model": describe_weights(Path(weights_path)) if weights_path else None,
                              "backbone": None}
    prepare = None
    if load_backbone and not spec.external and spec.backbone in cfg.backbone_weights:
        path, _ = backbone_file(cfg, spec.backbone)

        def prepare(model: "nn.Module") -> None:
            loaded = load_backbone_weights(model, path, spec.backbone, cfg.backbone_key_map.get(spec.backbone))
            record["backbone"] = loaded  # what the model is fed is origin.normalisation: one record of it
            print(f"{spec.name}: backbone weights {loaded['file']} filled {loaded['loaded']} of {loaded['total']} "
                  "backbone tensors")

    plan = plan_model(spec, classes, weights_path, cfg.eval.class_map, prepare, chosen.normalisation,
                      spec.name in cfg.accept_uninitialised)
    if chosen.note:
        plan.notes.insert(0, chosen.note)
    return plan, record


def check_model(name: str, cfg: "SuiteConfig", classes: Sequence[str] | None = None) -> ModelPlan:
    """Prove, without side effects, that model ``name`` of the suite can be built as the suite says: its name, its
    weights and backbone weights (checksums, names and shapes on the meta device; tensors left uninitialised
    refused unless ``accept_uninitialised`` names the model), its classes against the suite's, its normalisation.
    A UserError otherwise. ``classes``: the suite's (read from its data set when not given)."""
    import torch

    from segbench.models.checkpoints import backbone_of, match_backbone, tensor_shapes
    from segbench.models.registry import build_model

    if classes is None:
        from segbench.data.registry import dataset_info

        classes = dataset_info(cfg.data).classes
    from segbench.models.sources.exported import check_suite_fit

    spec = parse_spec(name, check=True)
    if not spec.external and ARCHITECTURES.get(spec.arch).origin is not None:  # a user's builder, with these classes
        check_user_model(spec.arch, spec.backbone, len(classes))
    plan, _ = plan_suite_model(spec, cfg, classes, load_backbone=False)
    check_suite_fit(spec.source, spec.arch, cfg)  # an exported file's fixed shapes and backends
    if not spec.external and spec.backbone in cfg.backbone_weights:
        path, _ = backbone_file(cfg, spec.backbone)
        with torch.device("meta"):
            model = build_model(spec, len(classes))
        match_backbone(backbone_of(model), tensor_shapes(path), path, spec.backbone,
                       cfg.backbone_key_map.get(spec.backbone))
    return plan


def check_models(cfg: "SuiteConfig", classes: Sequence[str]) -> list[ModelPlan]:
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


def load_suite_model(spec: ModelSpec | str, cfg: "SuiteConfig", classes: Sequence[str]) -> tuple["BuiltModel",
                                                                                                dict[str, Any]]:
    """Build one model of the suite with its weights loaded and its input normalisation applied; return it and the
    record of the weights it loaded (see ``plan_suite_model``)."""
    plan, record = plan_suite_model(spec, cfg, classes)
    return plan.build(), record
