"""The CI gate: a run compared with a baseline model by model under a typed policy, speed as a ratio to a reference
model and beyond the noise of the timed repeats, its verdicts rendered for people and machines, and baselines
updated from runs. May import ``core``, ``config``, ``metrics``, ``results``, ``deploy`` (the repeats' statistics)
and ``report``."""
