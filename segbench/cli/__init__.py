"""The ``segbench`` command line: one module per command group; exit codes; ``--debug``. Heavy imports wait until
a command needs them.

Owns: ``main`` (the typer application, the version, exit codes), ``run`` (``run``, ``bench``, ``eval``, ``score``),
``report`` (``segbench report``), ``gate`` (``segbench gate`` and ``segbench baseline update``), ``log``
(``segbench log``), ``zoo`` (``segbench zoo list|verify|add``), ``listing`` (``segbench list KIND``).
Imports: segbench, segbench.errors, segbench.core, segbench.config, segbench.data, segbench.metrics, segbench.models,
segbench.train, segbench.report, segbench.gate, segbench.pipeline, segbench.zoo
"""
