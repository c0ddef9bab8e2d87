"""What every other package may use: typed registries with suggestions, atomic file writes and the cache folder,
the hardware and software fingerprint, and signal handling. Imports nothing from segbench but ``segbench.errors``."""
