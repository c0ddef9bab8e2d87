"""The model registry: architectures built here on timm backbones, and published models from external sources.

A model is named ``ARCH-BACKBONE`` (``unet-resnet18``, ``pspnet-r50``): an architecture from
``ARCHITECTURES`` (segmentation-models-pytorch's and segbench's own) and any timm model that supports
``features_only`` (short aliases such as ``r18`` are accepted); or ``SOURCE:NAME`` for a published
checkpoint (``torchvision:deeplabv3_resnet50``, ``hf:FOLDER``, ``smp:FOLDER``, see segbench.models.sources).
Weights start random unless a local file is named: nothing is downloaded unless asked for.

``load_model`` is what a suite calls: it gives a module whose output channel i is suite class i, with
the model's source, input normalisation, label mapping and weights recorded (``BuiltModel.record``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench.errors import UserError, closest, unknown
from segbench.models.archs import ARCHITECTURES

if TYPE_CHECKING:
    from torch import nn

    from segbench.models.labelspace import LabelMapping
    from segbench.models.normalisation import Normalisation

BUILT_HERE = "segbench"  # ModelSpec.source of ARCH-BACKBONE models

BACKBONE_ALIASES = {
    "r18": "resnet18",
    "r34": "resnet34",
    "r50": "resnet50",
    "r101": "resnet101",
    "r10t": "resnet10t",
    "mnv3": "mobilenetv3_large_100",
    "effb0": "efficientnet_b0",
    "cnxt-atto": "convnext_atto",
}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name: ``ARCH-BACKBONE``, or ``SOURCE:NAME`` (arch NAME, no backbone)."""

    name: str
    arch: str
    backbone: str
    source: str = BUILT_HERE  # or an external source: torchvision, hf, smp

    @property
    def external(self) -> bool:
        """True for a published model from an external source."""
        return self.source != BUILT_HERE


@lru_cache(maxsize=1)
def timm_model_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


@cache
def check_backbone(name: str) -> str:
    """Return the timm name for ``name`` (alias or timm name) or raise a UserError.

    The backbone is built once on the meta device (no memory, no weights) to prove that it
    supports ``features_only``.
    """
    name = BACKBONE_ALIASES.get(name, name)
    import timm
    import torch

    if not timm.is_model(name):
        raise unknown("backbone", name, list(timm_model_names()) + list(BACKBONE_ALIASES))
    try:
        with torch.device("meta"):
            timm.create_model(name, pretrained=False, features_only=True)
    except Exception as exc:
        raise UserError(f"backbone '{name}' does not support features_only: {exc}".splitlines()[0]) from None
    return name


def parse_spec(spec: str, check: bool = False) -> ModelSpec:
    """Split ``ARCH-BACKBONE`` or ``SOURCE:NAME`` into a ModelSpec; with ``check``, prove that the names exist
    (for an external model: that its folder or cached hub id is there and of the right format)."""
    from segbench.models.sources import SOURCES, split_name

    external = split_name(spec)
    if external is not None:
        source, name = external
        if source not in SOURCES:
            hints = closest(source, SOURCES.names())
            hint = f"; did you mean '{hints[0]}:'?" if hints else ""
            raise UserError(f"model '{spec}': unknown model source '{source}'{hint} (expected "
                            f"{', '.join(s + ':NAME' for s in SOURCES.names())}; see `segbench list models`)")
        entry = SOURCES.get(source)
        if not name:
            raise UserError(f"model '{spec}': name the {source} model after '{source}:'")
        if check:
            entry.check(name)
        return ModelSpec(name=spec, arch=name, backbone="", source=source)
    if spec in ARCHITECTURES and not ARCHITECTURES.get(spec).takes_backbone:  # a user's model without a backbone
        return ModelSpec(name=spec, arch=spec, backbone="")  # its builder is tried with the suite's classes
    arch, sep, backbone = spec.partition("-")
    if not sep or not backbone:
        raise UserError(f"model '{spec}' is not of the form ARCH-BACKBONE (for example unet-resnet18) "
                        "or SOURCE:NAME (torchvision:, hf:, smp:, onnx:, torchscript:, export:)")
    architecture = ARCHITECTURES.get(arch)
    if not architecture.takes_backbone:
        raise UserError(f"model '{spec}': '{arch}' is registered without a backbone; name it '{arch}' alone")
    resolved = check_backbone(backbone) if check else BACKBONE_ALIASES.get(backbone, backbone)
    return ModelSpec(name=spec, arch=arch, backbone=resolved)


CHECK_SIZE = 64  # side of the trial image fed to it


@cache
def check_user_model(arch: str, backbone: str, num_classes: int) -> None:
    """Prove at config time that a user's registered builder works: it is built on the meta device (no memory, no
    weights) and must return an nn.Module whose output for a N x 3 x H x W input is N x K x H x W logits, K being
    ``num_classes`` (the suite's, see segbench.models.suite.check_model)."""
    import torch
    from torch import nn

    entry = ARCHITECTURES.get(arch)
    builder = (entry.origin or {}).get("builder", arch)
    try:
        with torch.device("meta"):
            model = entry.build(backbone, num_classes)
    except UserError:
        raise
    except (Exception, SystemExit) as exc:  # a builder that calls sys.exit is reported, not obeyed
        raise UserError(f"model '{arch}': its builder {builder} raised {type(exc).__name__}: "
                        f"{(str(exc).splitlines() or [''])[0]}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model '{arch}': its builder {builder} returned {type(model).__name__}, expected a "
                        "torch.nn.Module")
    try:
        with torch.no_grad():
            out = model.eval()(torch.empty(2, 3, CHECK_SIZE, CHECK_SIZE, device="meta"))
    except NotImplementedError:  # an operation without a meta kernel: the shape is checked when it runs
        return
    except (Exception, SystemExit) as exc:
        raise UserError(f"model '{arch}': its forward pass on a 2x3x{CHECK_SIZE}x{CHECK_SIZE} batch raised "
                        f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}") from None
    expected = (2, num_classes, CHECK_SIZE, CHECK_SIZE)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"model '{arch}': its builder {builder} gives a model whose output for a "
                        f"2x3x{CHECK_SIZE}x{CHECK_SIZE} batch with num_classes={num_classes} is {got}, expected "
                        f"logits of shape {expected}")


def build_model(spec: ModelSpec | str, num_classes: int) -> "nn.Module":
    """Build the model named by ``spec`` with random weights and ``num_classes`` outputs."""
    if isinstance(spec, str):
        spec = parse_spec(spec, check=True)
    if spec.external:
        raise UserError(f"model '{spec.name}' is a published model: build it with segbench.models.registry.load_model")
    return ARCHITECTURES.get(spec.arch).build(spec.backbone, num_classes)


@dataclass
class BuiltModel:
    """A model ready for a suite: ``module`` maps ImageNet-normalised images to N x K x H x W logits whose
    channel i is ``classes[i]`` (the suite's classes), in training and in evaluation mode."""

    module: "nn.Module"
    spec: ModelSpec
    classes: tuple[str, ...]
    normalisation: "Normalisation"
    mapping: "LabelMapping | None"  # None: built here with the suite's classes
    weights: dict[str, Any]  # where the weights come from
    notes: list[str] = field(default_factory=list)  # things the user should be told (e.g. classes assumed)

    def record(self) -> dict[str, Any]:
        """What results.json keeps about the model's origin: source, weights, normalisation, label mapping."""
        mapping = self.mapping.to_dict() if self.mapping else {"names_from": "suite", "identity": True}
        record = {"source": self.spec.source, "weights": self.weights,
                  "normalisation": self.normalisation.to_dict(), "label_mapping": mapping, "notes": list(self.notes)}
        user = ARCHITECTURES.get(self.spec.arch).origin if not self.spec.external else None
        if user is not None:  # a user's registered model: where its code comes from
            record["plugin"] = user
        return record


@dataclass
class ModelPlan:
    """Everything known about a model before it is built: found at config time, built by ``build``."""

    spec: ModelSpec
    classes: tuple[str, ...]
    normalisation: "Normalisation"
    mapping: "LabelMapping | None"
    weights: dict[str, Any]
    notes: list[str]
    make: Callable[[], "nn.Module"] = field(repr=False)

    def build(self) -> BuiltModel:
        """Build the module (and load its weights)."""
        return BuiltModel(self.make(), self.spec, self.classes, self.normalisation, self.mapping, self.weights,
                          list(self.notes))


def plan_model(spec: ModelSpec | str, classes: Sequence[str], weights: str | None = None,
               class_map: Mapping[str, str | None] | None = None,
               prepare: Callable[["nn.Module"], None] | None = None,
               normalisation: "Normalisation | None" = None, accept_uninitialised: bool = False) -> ModelPlan:
    """Locate ``spec``'s weights, prove on the meta device that they fill the model by name and shape, and match its
    classes to the suite's ``classes``; raise a UserError (the unmatched class names, missing weights, a wrong
    format, the tensors the weights leave uninitialised unless ``accept_uninitialised``) before anything is built.
    ``prepare`` runs on a model built here before ``weights`` are loaded (e.g. loading backbone weights);
    ``normalisation`` replaces what the model's source states (ImageNet's for a model built here)."""
    from segbench.models.labelspace import assume_suite_classes, canonical, match_classes
    from segbench.models.normalisation import IMAGENET, feed_normalised

    spec = parse_spec(spec, check=True) if isinstance(spec, str) else spec
    classes = tuple(classes)
    notes: list[str] = []
    if not spec.external:
        record: dict[str, Any] = {"kind": "local", "path": str(weights)} if weights is not None else {"kind": "random"}
        normalisation = normalisation or IMAGENET
        uninitialised = _check_local(spec, len(classes), weights, accept_uninitialised)
        if uninitialised:
            record["uninitialised"] = uninitialised
            notes.append(_uninitialised_note(spec.name, uninitialised))

        def make() -> "nn.Module":
            model = build_model(spec, len(classes))
            if prepare is not None:
                prepare(model)
            if weights is not None:
                from segbench.models.checkpoints import load_weights, read_state_dict

                if uninitialised:
                    model.load_state_dict(read_state_dict(Path(weights)), strict=False)
                else:
                    load_weights(model, weights)
            return feed_normalised(model, normalisation)

        return ModelPlan(spec, classes, normalisation, None, record, notes, make)

    from segbench.models.sources import SOURCES
    from segbench.models.sources.wrapper import PublishedModel

    resolved = SOURCES.get(spec.source).resolve(spec.arch, weights)
    uninitialised = resolved.verify()
    if uninitialised and not accept_uninitialised:
        raise uninitialised_error(spec.name, uninitialised)
    record = dict(resolved.weights)
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

    def make() -> "nn.Module":
        net, logits = resolved.build(bool(uninitialised))
        # torchvision and transformers models take any size, as their authors evaluate them (padding would change
        # their global pooling); smp models need sides divisible by 32 (the source says)
        return PublishedModel(net, logits, normalisation, mapping, resolved.size_divisor)

    return ModelPlan(spec, classes, normalisation, mapping, record, notes, make)


ACCEPT_KEY = "accept_uninitialised"  # the suite key that lists models whose weights may leave tensors at random


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
        model = build_model(spec, num_classes)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = tensor_shapes(Path(weights))
    missing = sorted(own.keys() - given.keys())
    if given.keys() - own.keys() or any(own[k] != given[k] for k in own.keys() & given.keys()):
        check_fit(model, given, f"weights.{spec.name}={weights}")  # names all three kinds of difference
    if missing and not accept:
        raise uninitialised_error(spec.name, missing)
    return missing


def load_model(spec: ModelSpec | str, classes: Sequence[str], weights: str | None = None,
               class_map: Mapping[str, str | None] | None = None, download: bool = False,
               prepare: Callable[["nn.Module"], None] | None = None) -> BuiltModel:
    """Build ``spec`` for a suite whose classes are ``classes`` (see ``plan_model``); with ``download``, first
    fetch an external model's published weights into its library's cache."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if download:
        fetch_model(spec)
    return plan_model(spec, classes, weights, class_map, prepare).build()


def fetch_model(spec: ModelSpec | str) -> str | None:
    """Download an external model's published weights into its library's cache (the network is used only
    here); return where they are. Models built here have nothing to fetch (None)."""
    from segbench.models.sources import SOURCES

    spec = parse_spec(spec) if isinstance(spec, str) else spec
    return SOURCES.get(spec.source).fetch(spec.arch) if spec.external else None


def list_models() -> list[tuple[str, str]]:
    """(name, description) of every architecture and external source, for ``segbench list models``."""
    from segbench.models.sources import SOURCES

    rows = [(name, f"[{a.source}] {a.description}") for name, a in ARCHITECTURES.items()]
    for _, source in SOURCES.items():
        rows += source.names()
    return rows


def list_backbones(pattern: str = "*") -> list[str]:
    """timm model names matching ``pattern``: an fnmatch pattern (``resnet*``), or a part of the name (``lite``)."""
    import timm

    return list(timm.list_models(pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"))
