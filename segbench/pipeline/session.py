"""What one invocation of ``run``, ``eval``, ``score`` or ``bench`` shares: its output folder, MLflow parent run,
device and fingerprint.

Everything a session needs is checked before it creates anything: the output folder can be made and holds
nothing yet, the tracking store answers and its schema is ready. Only then does the session claim its folder
(as ``NAME.partial``, renamed to ``NAME`` once results.json is written) and open its parent run. A failure or an
interrupt closes the open runs FAILED or KILLED and leaves the folder ``.partial``; nothing that existed before
is deleted.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from segbench.config.schema import SuiteConfig, TrackingConfig, config_hash, to_dict
from segbench.core.distributed import World
from segbench.core.environment import fingerprint, resolve_device
from segbench.core.files import flatten
from segbench.errors import UserError
from segbench.pipeline.sweep import Shard
from segbench.results.schema import SCHEMA_VERSION, write_results
from segbench.results.tracking import Tracker, check_store, tracking_uri

PARTIAL = ".partial"


def _partial(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL)


def check_output_dir(path: Path) -> None:
    """Raise a UserError unless ``path`` can become a run's output folder: it holds no files, no interrupted run
    left ``PATH.partial`` behind, and its nearest existing parent is a folder that accepts new folders."""
    if path.exists() and not path.is_dir():
        raise UserError(f"output_dir '{path}' is a file; expected a folder")
    if path.is_dir() and any(path.iterdir()):
        raise UserError(f"output_dir '{path}' already holds files; name a new folder or remove it")
    if _partial(path).exists():
        raise UserError(f"output_dir: '{_partial(path)}' exists (left by an interrupted run?); "
                        "move it away or name a new folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"output_dir '{path}': '{existing}' is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".segbench-", dir=existing))
    except OSError as exc:
        raise UserError(f"output_dir '{path}': cannot create folders in '{existing}' ({exc.strerror})") from None


def _default_dir(cfg: SuiteConfig, kind: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S") + (f"-{kind}" if kind != "run" else "")
    return Path("outputs") / cfg.name / stamp


def _claim(base: Path, explicit: bool) -> tuple[Path, Path]:
    """Create ``NAME.partial`` for a final folder ``NAME`` that no other run has taken; return both."""
    path, n = base, 1
    while True:
        if explicit or not path.exists():
            try:
                _partial(path).mkdir(parents=True, exist_ok=False)
                return path, _partial(path)
            except FileExistsError:
                if explicit:
                    raise UserError(f"output_dir: '{_partial(path)}' was created by another run just now") from None
        path, n = base.with_name(f"{base.name}-{n}"), n + 1


WHOLE = ("loss", "label_map", "backbone_key_map")  # logged as one param each: their keys are not param names


class Session:
    """One invocation's side effects, opened after its checks; use as a context manager."""

    def __init__(self, cfg: SuiteConfig, kind: str, device: torch.device | None = None,
                 world: World = World(), shard: Shard | None = None) -> None:
        self.cfg, self.kind, self.world, self.shard = cfg, kind, world, shard
        self.device = device or resolve_device(cfg.device)
        self.env = fingerprint(self.device) | {"world_size": world.size}
        self.suite_hash = config_hash(cfg)
        if not world.main:  # under torchrun only rank 0 writes: the other ranks have no folder and no runs
            self.final_dir = self.work_dir = None
            self.tracker, self.parent = Tracker(TrackingConfig(enabled=False), ""), None
            return
        explicit = cfg.output_dir is not None
        base = Path(cfg.output_dir) if explicit else _default_dir(cfg, kind)
        check_output_dir(base if explicit else base.parent)
        if cfg.tracking.enabled:
            check_store(tracking_uri(cfg.tracking))
        # Everything is checked: from here on the session creates things.
        self.final_dir, self.work_dir = _claim(base, explicit)
        self.tracker = Tracker(cfg.tracking, cfg.tracking.experiment or cfg.name, connect=False)
        try:
            self._open_parent()
        except BaseException as error:  # nothing ran yet: take back what was created
            self.tracker.end_all("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
            self.work_dir.rmdir()
            raise

    def _open_parent(self) -> None:
        cfg, kind = self.cfg, self.kind
        self.tracker.connect()
        tags = {"segbench.kind": kind, "segbench.version": self.env["segbench"], "segbench.suite": cfg.name,
                "segbench.suite_hash": self.suite_hash, "segbench.device": self.env["device"],
                "segbench.hardware": self.env["device_name"],
                "mlflow.source.git.commit": self.env["git_commit"] or "unknown"}
        if self.shard is not None:
            tags |= {"segbench.sweep": self.shard.sweep, "segbench.shard": f"{self.shard.index}/{self.shard.count}"}
        self.parent = self.tracker.start(f"{cfg.name}-{self.final_dir.name}", params=flatten(to_dict(cfg), keep=WHOLE),
                                         tags=tags)

    def header(self) -> dict[str, Any]:
        """The part of results.json every command shares: schema, suite, environment, MLflow ids."""
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind if self.kind in ("bench", "score") else "run",
            "suite": {"name": self.cfg.name, "config_hash": self.suite_hash, "config": to_dict(self.cfg),
                      "shard": asdict(self.shard) if self.shard else None},
            "environment": self.env,
            "mlflow": {"tracking_uri": self.tracker.uri, "experiment_id": self.tracker.experiment_id,
                       "parent_run_id": self.parent},
        }

    def finish(self, filename: str, results: dict) -> Path | None:
        """Write ``results`` atomically, log it, and give the output folder its final name (rank 0 only)."""
        if not self.world.main:
            return None
        write_results(self.work_dir / filename, results)
        self.tracker.artifact(self.parent, self.work_dir / filename)
        self.work_dir.rename(self.final_dir)
        self.tracker.end(self.parent, "FINISHED")
        return self.final_dir / filename

    def __enter__(self) -> Session:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: object) -> None:
        """An interrupted or failed session closes its MLflow runs KILLED or FAILED; its folder stays .partial."""
        if kind is not None:
            self.tracker.end_all("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")
