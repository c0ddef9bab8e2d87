"""Running a suite: the session every command shares (output folder, MLflow parent run), the per-model runner,
MLflow tracking, sweeps (shards) and ``torchrun`` data parallelism. May import every package but ``cli``."""
