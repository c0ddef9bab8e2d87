"""Models: the architecture registry (segmentation-models-pytorch and segbench's classics on timm backbones),
published checkpoints and exported files by source, safe checkpoints, label spaces and input normalisation.

Owns: ``factory`` (``build``, the one model builder: planned on the meta device, loaded with its weights, or the
bare architecture), ``registry`` (the model registry: architectures and sources by name), ``suite`` (a suite's
models planned and checked before anything is created), ``archs`` (architectures on timm backbones), ``sources``
(``SOURCE:NAME`` models), ``checkpoints`` (safetensors weights with their config), ``pretrained`` (timm's published
backbone weights), ``labelspace`` (a model's classes matched to a suite's), ``normalisation`` (a model's input
normalisation).
Imports: segbench.errors, segbench.core, segbench.config, segbench.data
"""
