"""What every other package may use: typed registries with suggestions, atomic file writes and the cache folder,
the hardware and software fingerprint, signal handling, ``torchrun`` ranks, and the user's plugins.

Owns: ``registry`` (``Registry``: names to entries, the closest names for an unknown one), ``files`` (the cache
folder, atomic writes, flattened keys), ``names`` (names that become paths), ``environment`` (the fingerprint of a
result), ``interrupts`` (Ctrl-C and signals: interrupt once, then wait for the clean-up), ``distributed``
(``torchrun`` data parallelism: ranks, gathers, only rank 0 writes), ``plugins`` (a suite's ``imports:`` and the
``segbench.plugins`` entry points).
Imports: segbench, segbench.errors
"""
