"""The model factory: ``build(spec, classes, mode=...)`` is the one way a model is made, as a registry build.

``spec`` names the model (``ARCH-BACKBONE`` or ``SOURCE:NAME``, see segbench.models.registry); ``classes`` are the
suite's class names (or their number). The mode says how far the build goes:

- ``"plan"``: nothing is built and nothing is loaded. The weights are located and proved on the meta device (no
  memory) to fill the model by name and shape, its classes are matched to ``classes``, and with a suite ``cfg`` its
  backbone weights, a user's builder and an exported file's shapes are checked too: the checks before a run.
- ``"load"``: the plan, then the module with its weights loaded and its input normalisation applied. Weights start
  random unless a file is named (``weights=``, or the suite's ``weights.MODEL`` and ``backbone_weights.BACKBONE``);
  a published model gets its source's weights.
- ``"random"``: the registered architecture alone, with random weights and ``len(classes)`` outputs (no weights,
  no normalisation hook; models built here only).

Every mode returns a ``Model``: the module (None for a plan), its origin record (``Model.record()``) and, with a
suite, the record of the weight files it loads (``Model.files``).

Normalisation with a suite, first that applies: ``normalisation.MODEL`` stated in the suite; the one a segbench
checkpoint folder records (``weights.MODEL=FOLDER``); ``normalisation.BACKBONE`` stated in the suite; for backbone
weights, the backbone's own timm ``pretrained_cfg`` mean and std (for ``timm`` and for a local file alike: a file of
a backbone is most likely a copy or a port of the weights timm publishes for it); for a published model, its
source's (``preprocessor_config.json``, torchvision's transforms, ...); else ImageNet's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from segbench.errors import UserError
from segbench.models.archs import ARCHITECTURES
from segbench.models.normalisation import IMAGENET, Normalisation, stated, timm_normalisation
from segbench.models.registry import ModelSpec, check_user_model, parse_spec

if TYPE_CHECKING:
    from torch import nn

    from segbench.config.schema import SuiteConfig
    from segbench.models.labelspace import LabelMapping

    Make = Callable[[Callable[[nn.Module], None] | None], nn.Module]  # builds a plan's module (prepare: see _local)

Mode = Literal["plan", "load", "random"]
MODES = ("plan", "load", "random")
ACCEPT_KEY = "accept_uninitialised"  # the suite key that lists models whose weights may leave tensors at random


@dataclass
class Model:
    """A model from the factory: ``module`` maps ImageNet-normalised images to N x K x H x W logits whose channel i
    is ``classes[i]`` (the suite's classes), in training and in evaluation mode; None when only planned."""

    module: "nn.Module | None"
    spec: ModelSpec
    classes: tuple[str, ...]
    normalisation: Normalisation
    mapping: "LabelMapping | None"  # None: built here with the suite's classes
    weights: dict[str, Any]  # where the weights come from
    notes: list[str] = field(default_factory=list)  # things the user should be told (e.g. classes assumed)
    # with a suite, results.json's ``weights``: ``model`` (checkpoint file, sha256), ``backbone`` (file, sha256,
    # coverage: set when loaded)
    files: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        """What results.json keeps about the model's origin: source, weights, normalisation, label mapping."""
        mapping = self.mapping.to_dict() if self.mapping else {"names_from": "suite", "identity": True}
        record = {"source": self.spec.source, "weights": self.weights,
                  "normalisation": self.normalisation.to_dict(), "label_mapping": mapping, "notes": list(self.notes)}
        user = ARCHITECTURES.get(self.spec.arch).origin if not self.spec.external else None
        if user is not None:  # a user's registered model: where its code comes from
            record["plugin"] = user
        return record


def build(spec: ModelSpec | str, classes: Sequence[str] | int, mode: Mode = "load", *, weights: str | None = None,
          cfg: "SuiteConfig | None" = None, class_map: Mapping[str, str | None] | None = None) -> Model:
    """The model ``spec`` for a suite whose classes are ``classes``, planned, loaded or random as ``mode`` says (see
    the module docstring); a UserError (unmatched class names, missing weights, a wrong format, tensors the weights
    leave uninitialised) before anything is built. ``cfg``: a suite's model, with the suite's weights, backbone
    weights, normalisation, class map and ``accept_uninitialised``; else ``weights`` (a local file or folder) and
    ``class_map`` (model class -> suite class) say it."""
    if mode not in MODES:
        raise ValueError(f"build: mode={mode!r}, expected one of {', '.join(MODES)}")
    if cfg is not None and (weights is not None or class_map is not None):
        raise ValueError("build: a suite's model takes its weights and class map from cfg")
    spec = parse_spec(spec, check=True) if isinstance(spec, str) else spec
    names = tuple(str(i) for i in range(classes)) if isinstance(classes, int) else tuple(classes)
    if mode == "random":
        if spec.external:
            raise UserError(f"model '{spec.name}' is a published model: its weights come from its source; build it "
                            "with mode='load'")
        if weights is not None or cfg is not None:
            raise ValueError("build: mode='random' loads no weights")
        return Model(_architecture(spec, len(names)), spec, names, IMAGENET, None, {"kind": "random"})
    if mode == "plan" and not spec.external and ARCHITECTURES.get(spec.arch).origin is not None:
        check_user_model(spec.arch, spec.backbone, len(names))  # a user's builder, with these classes
    chosen, accept, prepare = Chosen(None), False, None
    files = None
    if cfg is not None:
        from segbench.models.checkpoints import describe_weights

        chosen = choose_normalisation(spec, cfg)
        weights, class_map = cfg.weights.get(spec.name), cfg.eval.class_map
        accept = spec.name in cfg.accept_uninitialised
        files = {"model": describe_weights(Path(weights)) if weights else None, "backbone": None}
        if mode == "load" and not spec.external and spec.backbone in cfg.backbone_weights:
            prepare = _backbone_loader(spec, cfg, files)
    planned, make = (_external(spec, names, weights, class_map, chosen.normalisation, accept) if spec.external else
                     _local(spec, names, weights, chosen.normalisation, accept))
    planned.files = files
    if chosen.note:
        planned.notes.insert(0, chosen.note)
    if mode == "plan":
        if cfg is not None:
            _check_suite(spec, cfg, len(names))
        return planned
    planned.module = make(prepare)
    return planned


def _architecture(spec: ModelSpec, num_classes: int) -> "nn.Module":
    """The registered architecture of ``spec`` with random weights (on the current default device)."""
    return ARCHITECTURES.get(spec.arch).build(spec.backbone, num_classes)


def _local(spec: ModelSpec, classes: tuple[str, ...], weights: str | None, normalisation: Normalisation | None,
           accept: bool) -> tuple[Model, Make]:
    """The plan of a model built here; its ``make`` runs ``prepare`` (e.g. loading backbone weights) on the module
    before ``weights`` are loaded."""
    from segbench.models.normalisation import feed_normalised

    record: dict[str, Any] = {"kind": "local", "path": str(weights)} if weights is not None else {"kind": "random"}
    normalisation = normalisation or IMAGENET
    notes: list[str] = []
    uninitialised = _check_local(spec, len(classes), weights, accept)
    if uninitialised:
        record["uninitialised"] = uninitialised
        notes.append(_uninitialised_note(spec.name, uninitialised))

    def make(prepare: Callable[["nn.Module"], None] | None) -> "nn.Module":
        model = _architecture(spec, len(classes))
        if prepare is not None:
            prepare(model)
        if weights is not None:
            from segbench.models.checkpoints import load_weights, read_state_dict

            if uninitialised:
                model.load_state_dict(read_state_dict(Path(weights)), strict=False)
            else:
                load_weights(model, weights)
        return feed_normalised(model, normalisation)

    return Model(None, spec, classes, normalisation, None, record, notes), make


def _external(spec: ModelSpec, classes: tuple[str, ...], weights: str | None,
              class_map: Mapping[str, str | None] | None, normalisation: Normalisation | None,
              accept: bool) -> tuple[Model, Make]:
    """The plan of a published model: its weights resolved and verified, its classes matched to the suite's."""
    from segbench.models.labelspace import assume_suite_classes, canonical, match_classes
    from segbench.models.sources import SOURCES
    from segbench.models.sources.wrapper import PublishedModel

    resolved = SOURCES.get(spec.source).resolve(spec.arch, weights)
    uninitialised = resolved.verify()
    if uninitialised and not accept:
        raise uninitialised_error(spec.name, uninitialised)
    record = dict(resolved.weights)
    notes: list[str] = []
    if uninitialised:
        record["uninitialised"] = uninitialised
        notes.append(_uninitialised_note(spec.name, uninitialised))
    normalisation = normalisation or resolved.normalisation
    outputs = tuple(str(i) for i in range(resolved.num_outputs))  # a nameless checkpoint's classes, by index
    if resolved.classes is None and not any(canonical(k) in outputs for k in class_map or {}):
        mapping = assume_suite_classes(resolved.num_outputs, classes, spec.name)
        notes.append(f"{spec.name}: the checkpoint carries no class names; its {resolved.num_outputs} outputs are "
                     "taken to be the suite's classes, in the suite's order")
    else:
        mapping = match_classes(resolved.classes or outputs, classes, class_map, spec.name)

    def make(prepare: Callable[["nn.Module"], None] | None) -> "nn.Module":
        net, logits = resolved.build(bool(uninitialised))
        # torchvision and transformers models take any size, as their authors evaluate them (padding would change
        # their global pooling); smp models need sides divisible by 32 (the source says)
        return PublishedModel(net, logits, normalisation, mapping, resolved.size_divisor)

    return Model(None, spec, classes, normalisation, mapping, record, notes), make


def uninitialised_error(model: str, names: list[str]) -> UserError:
    """The refusal of weights that leave tensors of ``model`` at their random initial values."""
    from segbench.models.sources.base import names as shown

    return UserError(f"{model}: its weights leave {len(names)} tensors of the model uninitialised ({shown(names)}); "
                     f"they would be random: name complete weights, or accept that with {ACCEPT_KEY}=[{model}]")


def _uninitialised_note(model: str, names: list[str]) -> str:
    from segbench.models.sources.base import names as shown

    return f"{model}: {len(names)} tensors start at random values, as {ACCEPT_KEY} allows ({shown(names)})"


def _check_local(spec: ModelSpec, num_classes: int, weights: str | None, accept: bool) -> list[str]:
    """The tensors of a model built here that its local ``weights`` leave uninitialised (accepted, or a UserError);
    checked by name and shape on the meta device."""
    if weights is None:
        return []
    import torch

    from segbench.models.checkpoints import check_fit, tensor_shapes

    with torch.device("meta"):
        model = _architecture(spec, num_classes)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = tensor_shapes(Path(weights))
    missing = sorted(own.keys() - given.keys())
    if given.keys() - own.keys() or any(own[k] != given[k] for k in own.keys() & given.keys()):
        check_fit(model, given, f"weights.{spec.name}={weights}")  # names all three kinds of difference
    if missing and not accept:
        raise uninitialised_error(spec.name, missing)
    return missing


def _backbone_loader(spec: ModelSpec, cfg: "SuiteConfig", files: dict[str, Any]) -> Callable[["nn.Module"], None]:
    """Loads the suite's backbone weights into a model built here and records them in ``files``."""
    from segbench.models.checkpoints import load_backbone_weights

    path, _ = backbone_file(cfg, spec.backbone)

    def prepare(model: "nn.Module") -> None:
        loaded = load_backbone_weights(model, path, spec.backbone, cfg.backbone_key_map.get(spec.backbone))
        files["backbone"] = loaded  # what the model is fed is origin.normalisation: one record of it
        print(f"{spec.name}: backbone weights {loaded['file']} filled {loaded['loaded']} of {loaded['total']} "
              "backbone tensors")

    return prepare


def _check_suite(spec: ModelSpec, cfg: "SuiteConfig", num_classes: int) -> None:
    """What a suite adds to a plan: an exported file's fixed shapes and backends, and the backbone weights' names
    and shapes against the backbone (on the meta device)."""
    import torch

    from segbench.models.checkpoints import backbone_of, match_backbone, tensor_shapes
    from segbench.models.sources.exported import check_suite_fit

    check_suite_fit(spec.source, spec.arch, cfg)
    if not spec.external and spec.backbone in cfg.backbone_weights:
        path, _ = backbone_file(cfg, spec.backbone)
        with torch.device("meta"):
            model = _architecture(spec, num_classes)
        match_backbone(backbone_of(model), tensor_shapes(path), path, spec.backbone,
                       cfg.backbone_key_map.get(spec.backbone))


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
