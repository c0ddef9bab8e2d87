"""The model zoo: typed model cards, their verification by re-evaluation, and the JSON Schemas segbench
publishes.

Owns: ``cards`` (the typed schema of ``zoo/*.yaml``), ``verify`` (cards evaluated and verified on demand, cards
from runs), ``schemas`` (``schemas/*.schema.json``, generated from the declared types).
Imports: segbench.errors, segbench.core, segbench.config, segbench.data, segbench.results, segbench.models,
segbench.pipeline
"""
