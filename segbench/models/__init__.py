"""Models: the architecture registry (segmentation-models-pytorch and segbench's classics on timm backbones in
``archs/``), published checkpoints by source (``sources/``), safe checkpoints, label spaces and input normalisation.
May import ``core`` and ``config``."""
