"""The public Python API, for notebooks and scripts: ``run``, ``bench`` and ``evaluate`` do what the CLI does and
return the typed results; ``register_model``, ``register_dataset`` and ``register_metric`` open segbench's
registries to a user's own components. Re-exported lazily by ``segbench/__init__.py``, so ``import segbench`` stays
cheap. May import every package but ``cli``."""
