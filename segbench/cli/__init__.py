"""The ``segbench`` command line: one module per command group. Heavy imports wait until a command needs them. May
import everything."""
