"""segbench's own architectures (the classics smp lacks), built on timm backbones.

Each module is imported only when its model is built, so listing the registry stays free of torch.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from segbench.models import Architecture
    from segbench.registry import Registry

_OWN = {
    "fcn32s": ("fcn", "FCN-32s: stride-32 class scores, learned upsampling initialised to bilinear"),
    "fcn16s": ("fcn", "FCN-16s: FCN-32s fused with stride-16 scores"),
    "fcn8s": ("fcn", "FCN-8s: FCN-16s fused with stride-8 scores"),
    "parsenet": ("parsenet", "ParseNet: L2-normalised global context unpooled and concatenated (stride 8)"),
    "deeplabv1": ("deeplab", "DeepLab v1 LargeFOV: atrous backbone (stride 8), rate-12 head; CRF in eval"),
    "deeplabv2": ("deeplab", "DeepLab v2: ASPP, rates 6/12/18/24, branch scores summed (stride 8)"),
}


def _lazy_builder(module: str, name: str) -> Callable[..., "nn.Module"]:
    def build(backbone: str, num_classes: int, **kwargs) -> "nn.Module":
        return getattr(import_module(f"segbench.archs.{module}"), name)(backbone, num_classes, **kwargs)

    return build


def register_architectures(registry: "Registry[Architecture]") -> None:
    """Add segbench's own architectures to ``registry``."""
    from segbench.models import Architecture

    for name, (module, description) in _OWN.items():
        registry.register(name, Architecture(name, _lazy_builder(module, name), "segbench", description))
