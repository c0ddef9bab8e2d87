"""Undoing what a user's code registers in the test process, so that in-process runs do not leak into each other."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _a_users_file(module) -> bool:
    """Whether ``module`` was loaded from a file a test wrote (under the temporary folder, outside this checkout) or
    from the example plugin of examples/."""
    file = getattr(module, "__file__", None) or ""
    return (file.startswith(tempfile.gettempdir()) and not file.startswith(str(REPO) + os.sep)) \
        or file.startswith(str(REPO / "examples") + os.sep)


@contextlib.contextmanager
def user_code_forgotten(*names: str):
    """What a user's modules register while this block runs in the test process is undone after it: the registries
    of models, data sets and metrics, the user's modules (``names``, and any loaded from a file a test wrote), the
    folders their imports added to sys.path. The next test imports its own module of the same name afresh."""
    from segbench.core.plugins import USER_MODULES
    from segbench.data.registry import DATASETS
    from segbench.metrics import registry as metrics
    from segbench.models.archs import ARCHITECTURES
    from segbench.models.registry import check_user_model

    saved = {registry: dict(registry._entries) for registry in (ARCHITECTURES, DATASETS, metrics.REGISTRY)}
    order, path, modules, users = list(metrics._ORDER), list(sys.path), set(sys.modules), set(USER_MODULES)
    try:
        yield
    finally:
        for registry, entries in saved.items():
            registry._entries.clear()
            registry._entries.update(entries)
        metrics._ORDER[:] = order
        check_user_model.cache_clear()
        sys.path[:] = path
        USER_MODULES.intersection_update(users)
        for name in set(sys.modules) - modules:
            if name in names or _a_users_file(sys.modules[name]):
                sys.modules.pop(name)
