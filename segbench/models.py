"""The architecture registry: segmentation-models-pytorch's architectures and segbench's own, on timm backbones.

A model is named ``ARCH-BACKBONE`` (``unet-resnet18``, ``pspnet-r50``): an architecture from
``ARCHITECTURES`` and any timm model that supports ``features_only`` (short aliases such as ``r18``
are accepted). Weights start random unless a local file is named: nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING

from segbench.errors import UserError, unknown
from segbench.registry import Registry

if TYPE_CHECKING:
    from torch import nn

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
class Architecture:
    """One segmentation architecture that can be built on a timm backbone."""

    name: str
    build: Callable[..., "nn.Module"]  # (backbone, num_classes, **kwargs) -> nn.Module
    source: str  # "smp" or "segbench"
    description: str


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``ARCH-BACKBONE`` model name."""

    name: str
    arch: str
    backbone: str


ARCHITECTURES: Registry[Architecture] = Registry("model")


def _smp_builder(class_name: str) -> Callable[..., "nn.Module"]:
    def build(backbone: str, num_classes: int, **kwargs) -> "nn.Module":
        import segmentation_models_pytorch as smp

        return getattr(smp, class_name)(
            encoder_name=f"tu-{backbone}", encoder_weights=None, classes=num_classes, **kwargs
        )

    return build


_SMP = {
    "unet": ("Unet", "U-Net: encoder-decoder with skip concatenation"),
    "unetplusplus": ("UnetPlusPlus", "U-Net++: nested dense skip pathways"),
    "fpn": ("FPN", "Feature Pyramid Network decoder"),
    "pspnet": ("PSPNet", "pyramid pooling (1/2/3/6 bins) on stride-8 features"),
    "deeplabv3": ("DeepLabV3", "ASPP with image pooling, atrous backbone (stride 8)"),
    "deeplabv3plus": ("DeepLabV3Plus", "DeepLab v3 encoder with a light decoder (stride 4 skip)"),
    "linknet": ("Linknet", "LinkNet: additive skips, light decoder"),
    "manet": ("MAnet", "multi-scale attention decoder"),
    "pan": ("PAN", "pyramid attention network"),
    "upernet": ("UPerNet", "unified perceptual parsing: PPM plus FPN"),
    "segformer": ("Segformer", "SegFormer all-MLP decoder"),
    "dpt": ("DPT", "dense prediction transformer decoder (ViT backbones)"),
}
for _name, (_cls, _desc) in _SMP.items():
    ARCHITECTURES.register(_name, Architecture(_name, _smp_builder(_cls), "smp", _desc))


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
    """Split ``ARCH-BACKBONE`` into a ModelSpec; with ``check``, prove both names exist."""
    arch, sep, backbone = spec.partition("-")
    if not sep or not backbone:
        raise UserError(f"model '{spec}' is not of the form ARCH-BACKBONE (for example unet-resnet18)")
    ARCHITECTURES.get(arch)
    resolved = check_backbone(backbone) if check else BACKBONE_ALIASES.get(backbone, backbone)
    return ModelSpec(name=spec, arch=arch, backbone=resolved)


def build_model(spec: ModelSpec | str, num_classes: int, **kwargs) -> "nn.Module":
    """Build the model named by ``spec`` with random weights and ``num_classes`` outputs."""
    if isinstance(spec, str):
        spec = parse_spec(spec, check=True)
    return ARCHITECTURES.get(spec.arch).build(spec.backbone, num_classes, **kwargs)


def list_backbones(pattern: str = "*") -> list[str]:
    """timm model names matching ``pattern`` (fnmatch style)."""
    import timm

    return list(timm.list_models(pattern))


def _register_own() -> None:
    from segbench.archs import register_architectures

    register_architectures(ARCHITECTURES)


_register_own()
