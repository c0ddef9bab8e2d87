"""The CI gate: a run compared with a baseline model by model, its verdicts rendered for people and machines, and
baselines updated from runs. May import ``core``, ``results`` and ``report``."""
