"""The model registry: architectures built here on timm backbones, and published models from external sources.

A model is named ``ARCH-BACKBONE`` (``unet-resnet18``, ``pspnet-r50``): an architecture from
``ARCHITECTURES`` (segmentation-models-pytorch's and segbench's own) and any timm model that supports
``features_only`` (short aliases such as ``r18`` are accepted); or ``SOURCE:NAME`` for a published
checkpoint (``torchvision:deeplabv3_resnet50``, ``hf:FOLDER``, ``smp:FOLDER``, see segbench.models.sources).
Nothing is downloaded unless asked for (``fetch_model``). Models are built from these names by the one factory,
``segbench.models.factory.build``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

from segbench.errors import UserError, closest, unknown
from segbench.models.archs import ARCHITECTURES

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
