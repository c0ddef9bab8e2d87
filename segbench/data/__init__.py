"""Data sets: the layout registry, the shared image/mask file pairs (pairing, reading, checks with a cache),
transforms, corrupted views, and one module per on-disk layout.

Owns: ``registry`` (``DATASETS``: each entry builds a split from the suite's ``data`` section), ``base`` (the
normalisation of the images, the description of the labels), ``pairs`` (image/mask pairs on disk, the checked
data set class), ``checks`` (reading and checking files, with a cache), ``transforms`` (image and mask together),
``corruptions`` (ImageNet-C views of a split), ``layouts`` (one module per on-disk layout).
Imports: segbench.errors, segbench.core, segbench.config
"""
