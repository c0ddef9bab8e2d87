"""What a new ``segbench`` process would not have, reset for commands run in the test process."""

from __future__ import annotations

import sys


def forget_cached_stores() -> None:
    """Empty MLflow's per-process caches of tracking stores and of their database engines. Both are keyed by the URI
    as written, so the default ``sqlite:///mlflow.db`` (relative to the working folder) would otherwise stay bound to
    the folder of the first command that used it in this process; a command typed in a shell starts with none."""
    sqlalchemy_store = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    engines = getattr(getattr(sqlalchemy_store, "SqlAlchemyStore", None), "_engine_map", None)
    if isinstance(engines, dict):
        engines.clear()
    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    registry = getattr(utils, "_tracking_store_registry", None)
    cached = getattr(registry, "_get_store_with_resolved_uri", None)
    if cached is not None and hasattr(cached, "cache_clear"):
        cached.cache_clear()
