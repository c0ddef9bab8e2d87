"""What one invocation of ``run``, ``eval``, ``score`` or ``bench`` shares: its output folder, MLflow parent run,
device and fingerprint.

Everything a session needs is checked before it creates anything: the output folder can be made (and an
explicit ``output_dir`` holds nothing yet), the tracking store answers and its schema is ready. Only then does the
session claim its folder (as ``NAME.partial``, renamed to ``NAME`` once results.json is written) and open its
parent run. Without ``output_dir`` every invocation gets a fresh folder, ``outputs/<suite>/<UTC time>[-N]``, so
runs in one working folder never collide nor refuse because earlier runs exist. With ``resume`` (a ``.partial``
folder ``pipeline.resume`` found and checked) the session continues that folder and reopens its parent run
instead. A failure or an interrupt closes the open runs FAILED or KILLED and leaves the folder ``.partial``;
nothing that existed before is deleted. A tracking store that fails mid-run is not a failure of the run (see
``Tracker``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from segbench.config.schema import SuiteConfig, TrackingConfig, config_hash, to_dict
from segbench.core.distributed import World
from segbench.core.environment import fingerprint, resolve_device
from segbench.core.names import safe_name
from segbench.errors import UserError
from segbench.pipeline.logged import parent_params, parent_tags
from segbench.pipeline.resume import clear_progress, read_run_file, write_run_file
from segbench.pipeline.sweep import Shard as Sweep
from segbench.results.schema import (
    SCHEMA_VERSION,
    Environment,
    Mlflow,
    Results,
    Shard,
    Suite,
    check_headlines,
    write_results,
)
from segbench.results.tracking import Tracker, check_store, tracking_uri

PARTIAL = ".partial"
DEFAULT_ROOT = Path("outputs")


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
    check_creatable(path)


def check_creatable(path: Path) -> None:
    """Raise a UserError unless folders can be created at ``path``: its nearest existing parent is a folder that
    accepts new folders."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"output_dir '{path}': '{existing}' is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".segbench-", dir=existing))
    except OSError as exc:
        raise UserError(f"output_dir '{path}': cannot create folders in '{existing}' ({exc.strerror})") from None


def default_dir(suite: str, kind: str, now: datetime | None = None) -> Path:
    """``outputs/<suite>/<UTC time>[-<kind>]``: one folder per invocation, sorted by when it started; the suite's
    name made safe for a path (it may come from a shared suite file)."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%SZ")
    return DEFAULT_ROOT / safe_name(suite) / (stamp + (f"-{kind}" if kind != "run" else ""))


def _claim_fresh(base: Path) -> tuple[Path, Path]:
    """Claim ``BASE.partial`` (else ``BASE-2.partial``, ...) for a final folder no other run has taken. Creating a
    folder is atomic, so two runs started together never share one; a name is taken when its ``.partial`` exists
    or, once a run finished, the folder itself (checked after the claim, so a run renaming its folder meanwhile is
    seen)."""
    path, n = base, 1
    while True:
        try:
            _partial(path).mkdir(parents=True)
        except FileExistsError:
            pass
        else:
            if not path.exists():
                return path, _partial(path)
            _partial(path).rmdir()
        n += 1
        path = base.with_name(f"{base.name}-{n}")


def _claim(base: Path, explicit: bool) -> tuple[Path, Path]:
    """Create ``NAME.partial`` for the final folder ``NAME``; return both. An explicit ``output_dir`` is that
    folder or an error; the default one is fresh."""
    if not explicit:
        return _claim_fresh(base)
    try:
        _partial(base).mkdir(parents=True)
    except FileExistsError:
        raise UserError(f"output_dir: '{_partial(base)}' was created by another run just now") from None
    return base, _partial(base)


class Session:
    """One invocation's side effects, opened after its checks; use as a context manager."""

    def __init__(self, cfg: SuiteConfig, kind: str, device: torch.device | None = None,
                 world: World = World(), shard: Sweep | None = None, folder: bool = True,
                 resume: Path | None = None) -> None:
        """``folder=False`` (the Python API without ``output_dir``): no output folder; results.json is only logged
        to MLflow, and only when tracking is on. ``resume``: an interrupted run's ``.partial`` folder, continued."""
        self.cfg, self.kind, self.world, self.shard, self.resumed = cfg, kind, world, shard, resume
        self.device = device or resolve_device(cfg.device)
        self.env = Environment(**fingerprint(self.device), world_size=world.size)
        self.shard_record = Shard(**asdict(shard)) if shard else None
        self.suite_hash = config_hash(cfg)
        if not world.main:  # under torchrun only rank 0 writes: the other ranks have no folder and no runs
            self.final_dir = self.work_dir = None
            self.tracker, self.parent = Tracker(TrackingConfig(enabled=False), ""), None
            return
        explicit = cfg.output_dir is not None
        base = Path(cfg.output_dir) if explicit else default_dir(cfg.name, kind)
        if resume is None and explicit and folder:
            check_output_dir(base)
        elif resume is None and folder:
            check_creatable(base.parent)
        if cfg.tracking.enabled:
            check_store(tracking_uri(cfg.tracking))
        self.tracker = Tracker(cfg.tracking, cfg.tracking.experiment or cfg.name, connect=False)
        if resume is not None:  # an interrupted run's folder and MLflow parent run, continued
            self.work_dir, self.final_dir = resume, resume.with_name(resume.name[:-len(PARTIAL)])
            self.run_name = self.final_dir.name
            self._open_parent(read_run_file(resume)["parent_run_id"])
            return
        # Everything is checked: from here on the session creates things.
        self.final_dir, self.work_dir = _claim(base, explicit) if folder else (None, None)
        self.run_name = self.final_dir.name if self.final_dir is not None else base.name
        try:
            self._open_parent()
        except BaseException as error:  # nothing ran yet: take back what was created
            self.tracker.end_all("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
            if self.work_dir is not None:
                self.work_dir.rmdir()
            raise
        if kind == "run" and self.work_dir is not None:
            write_run_file(self.work_dir, cfg, self.parent)

    def _open_parent(self, run_id: str | None = None) -> None:
        cfg = self.cfg
        self.tracker.connect()
        tags = parent_tags(self.kind, cfg.name, self.suite_hash, self.env, self.shard_record)
        self.parent = self.tracker.start(f"{cfg.name}-{self.run_name}", params=None if run_id else
                                         parent_params(to_dict(cfg)), tags=tags, run_id=run_id)

    def results(self, **parts: Any) -> Results:
        """This invocation's typed results: what every command shares (schema, suite, environment, MLflow ids) and
        ``parts`` (models, dataset, convention, metric_definitions)."""
        return Results(
            schema_version=SCHEMA_VERSION,
            kind=self.kind if self.kind in ("bench", "score") else "run",
            suite=Suite(name=self.cfg.name, config_hash=self.suite_hash, config=to_dict(self.cfg),
                        shard=self.shard_record),
            environment=self.env,
            mlflow=Mlflow(tracking_uri=self.tracker.uri, experiment_id=self.tracker.experiment_id,
                          parent_run_id=self.parent),
            **parts)

    def finish(self, filename: str, results: Results) -> Path | None:
        """Write ``results`` atomically, log it, and give the output folder its final name (rank 0 only)."""
        if not self.world.main:
            return None
        if self.work_dir is None:  # no folder (the Python API): logged to MLflow only, when tracking is on
            check_headlines(results)  # what the writer refuses is refused in memory too
            if self.tracker.uri is not None:
                with tempfile.TemporaryDirectory(prefix="segbench-") as folder:
                    self.tracker.artifact(self.parent, write_results(Path(folder) / filename, results))
            self.tracker.end(self.parent, "FINISHED")
            return None
        write_results(self.work_dir / filename, results)
        clear_progress(self.work_dir)
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
