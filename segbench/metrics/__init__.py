"""Metrics: the streaming confusion matrix, the metric passport (per-image, boundary, calibration, surface,
instance-weighted), their definitions and bootstrap statistics. May import ``core`` only: metrics know nothing of
models or files."""
