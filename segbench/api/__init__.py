"""The public Python API, for notebooks and scripts: ``run``, ``bench`` and ``evaluate`` do what the CLI does and
return the typed results (``evaluate`` in memory: it writes nothing unless asked); ``read_results``, ``gate`` and
``report`` read, gate and report runs; ``register_model``, ``register_dataset`` and ``register_metric`` open
segbench's registries to a user's own components. Re-exported lazily by ``segbench/__init__.py``, so ``import
segbench`` stays cheap. May import every package but ``cli``."""
