"""Running a suite: the session every command shares (output folder, MLflow parent run), the per-model runner,
what a run logs to MLflow (live, or later from results.json with ``segbench log``), resuming an interrupted run,
sweeps (shards) and
``torchrun`` data parallelism. May import every package but ``cli``."""
