"""One module per on-disk data-set layout; each registers itself in ``segbench.data.registry``."""
