"""The CI gate: a run compared with a baseline model by model under a typed policy, speed as a ratio to a
reference model and beyond the noise of the timed repeats, its verdicts rendered for people and machines, and
baselines updated from runs.

Owns: ``compare`` (the verdicts against a baseline; ``update_baseline``), ``policy`` (``GatePolicy``: tolerances
and statistics), ``speed`` (which speed comparison, and when a drop is a regression), ``render`` (console text, a
Markdown PR comment, a JSON summary).
Imports: segbench.errors, segbench.core, segbench.metrics, segbench.results, segbench.deploy, segbench.report
"""
