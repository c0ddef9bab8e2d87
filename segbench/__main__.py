from segbench.cli.main import console_script

console_script()
