"""Data sets: the layout registry, the shared image/mask file-pair code (pairing, reading, checks with a cache),
transforms, and one module per on-disk layout in ``layouts/``. May import ``core`` and ``config``."""
