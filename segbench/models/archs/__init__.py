"""The architecture registry: segmentation-models-pytorch's architectures and segbench's own classics (the
modules of this package), each built on a timm backbone by name.

Builders import their library only when a model is built, so listing the registry stays free of torch.

Owns: ``fcn`` (FCN-32s, -16s and -8s), ``deeplab`` (DeepLab v1 and v2 on atrous backbones), ``parsenet`` (ParseNet).
Imports: segbench.errors, segbench.core
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

from segbench.core.registry import Registry

if TYPE_CHECKING:
    from torch import nn

Builder = Callable[[str, int], "nn.Module"]  # (timm backbone name, number of classes) -> model with random weights


@dataclass(frozen=True)
class Architecture:
    """One segmentation architecture that can be built on a timm backbone."""

    name: str
    build: Builder
    source: str  # "smp", "segbench", or the package (or module) of a user's registered model
    description: str
    takes_backbone: bool = True  # False: a user's model named NAME alone, built without a timm backbone
    origin: dict | None = None  # a user's model: its module, file and sha256, package and version, builder


ARCHITECTURES: Registry[Architecture] = Registry("model")

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

_OWN = {
    "fcn32s": ("fcn", "FCN-32s: stride-32 class scores, learned upsampling initialised to bilinear"),
    "fcn16s": ("fcn", "FCN-16s: FCN-32s fused with stride-16 scores"),
    "fcn8s": ("fcn", "FCN-8s: FCN-16s fused with stride-8 scores"),
    "parsenet": ("parsenet", "ParseNet: L2-normalised global context unpooled and concatenated (stride 8)"),
    "deeplabv1": ("deeplab", "DeepLab v1 LargeFOV: atrous backbone (stride 8), rate-12 head; CRF in eval"),
    "deeplabv2": ("deeplab", "DeepLab v2: ASPP, rates 6/12/18/24, branch scores summed (stride 8)"),
}


def _smp_builder(class_name: str) -> Builder:
    def build(backbone: str, num_classes: int) -> "nn.Module":
        import segmentation_models_pytorch as smp

        return getattr(smp, class_name)(encoder_name=f"tu-{backbone}", encoder_weights=None, classes=num_classes)

    return build


def _own_builder(module: str, name: str) -> Builder:
    def build(backbone: str, num_classes: int) -> "nn.Module":
        return getattr(import_module(f"segbench.models.archs.{module}"), name)(backbone, num_classes)

    return build


for _name, (_class, _description) in _SMP.items():
    ARCHITECTURES.register(_name, Architecture(_name, _smp_builder(_class), "smp", _description))
for _name, (_module, _description) in _OWN.items():
    ARCHITECTURES.register(_name, Architecture(_name, _own_builder(_module, _name), "segbench", _description))
