"""results.json and where results are found: its typed schema (with the passport, robustness and speed
records), the one writer and reader, the tables of a run, and MLflow tracking.

Owns: ``schema`` (``Results`` and ``ModelRecord``; ``write_results`` and ``read_results``), ``passport`` (the
metric-passport records), ``robustness`` (the robustness record), ``speed`` (the speed and deployment records),
``tables`` (the leaderboard, per-class, speed and robustness tables and the confusion matrices), ``find``
(results.json files and folders, MLflow runs), ``tracking`` (MLflow: an experiment per suite, a parent run per
command, a child run per model).
Imports: segbench.errors, segbench.core, segbench.config, segbench.metrics
"""
