from segbench.cli import entry

entry()
