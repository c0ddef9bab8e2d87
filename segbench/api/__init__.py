"""The public Python API, for notebooks and scripts, re-exported lazily by ``segbench/__init__.py`` so that
``import segbench`` stays cheap.

Owns: ``suites`` (``run`` and ``bench``: what the CLI does, returning the typed results), ``evaluate``
(``evaluate``: an ``nn.Module`` held in memory, evaluated in memory; it writes nothing unless asked), ``results``
(``Results`` with the report's figures; ``read_results``, ``gate`` and ``report``, returning what the CLI prints),
``register`` (``register_model``, ``register_dataset`` and ``register_metric``: a user's own components in
segbench's registries).
Imports: segbench.errors, segbench.core, segbench.data, segbench.metrics, segbench.results, segbench.models,
segbench.report, segbench.gate, segbench.pipeline
"""
