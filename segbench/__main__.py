from segbench.cli.main import entry

entry()
