"""segbench's own architectures (the classics smp lacks), built on timm backbones."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segbench.models import Architecture
    from segbench.registry import Registry


def register_architectures(registry: "Registry[Architecture]") -> None:
    """Add segbench's own architectures to ``registry``."""
