"""One module per on-disk data-set layout; each registers itself in ``segbench.data.registry``.

Owns: ``synthetic`` (generated scenes, the default), ``folder`` (a user's own images and masks), ``voc`` (Pascal VOC
2012), ``cityscapes`` (Cityscapes fine), ``ade20k`` (ADE20K scene parsing), ``acdc`` (ACDC adverse conditions).
Imports: segbench.errors, segbench.config, segbench.data
"""
