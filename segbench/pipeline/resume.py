"""``resume=RUN_DIR|auto``: what an interrupted run left in its ``.partial`` folder, and continuing from it.

A run's folder holds, while it runs, ``run.json`` (the settings that change the numbers, their hash and the MLflow
parent run), ``models/NAME.json`` for every finished model (its results.json record), and for the model in
training ``state/NAME.json`` (its MLflow run) and ``state/NAME.pt`` (its training state, see
``segbench.train.state``). Resuming keeps the finished models, continues the interrupted one from its state in the
same MLflow runs, and refuses a suite whose settings changed, naming the keys."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from segbench.config.schema import SuiteConfig, config_hash, hashed_values
from segbench.config.typed import plain
from segbench.core.files import atomic_write, flatten
from segbench.core.names import safe_name
from segbench.errors import UserError
from segbench.results.schema import ModelRecord, read_model
from segbench.train.state import load_state, save_state

RUN_FILE = "run.json"
PARTIAL = ".partial"


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a model record")


def _write_json(path: Path, value: Any) -> None:
    atomic_write(path, json.dumps(value, default=_plain, indent=1))


def write_run_file(work_dir: Path, cfg: SuiteConfig, parent_run_id: str | None) -> None:
    """Note in a new run's folder what a resume must match: the hashed settings and the MLflow parent run."""
    _write_json(work_dir / RUN_FILE, {"config_hash": config_hash(cfg), "settings": hashed_values(cfg),
                                      "suite": cfg.name, "parent_run_id": parent_run_id})


def read_run_file(work_dir: Path) -> dict[str, Any]:
    return json.loads((work_dir / RUN_FILE).read_text())


def _candidates(cfg: SuiteConfig, root: Path) -> list[Path]:
    """Interrupted runs of ``cfg``'s output folder, newest first."""
    if cfg.output_dir is not None:
        out = Path(cfg.output_dir)
        partial = out.with_name(out.name + PARTIAL)
        return [partial] if (partial / RUN_FILE).is_file() else []
    folder = root / safe_name(cfg.name)
    found = [p for p in folder.glob("*" + PARTIAL) if (p / RUN_FILE).is_file()] if folder.is_dir() else []
    return sorted(found, key=lambda p: p.name, reverse=True)


def find_resume(cfg: SuiteConfig, root: Path) -> Path | None:
    """The ``.partial`` folder ``cfg.resume`` continues (None: a fresh start; ``auto`` looks in ``cfg.output_dir``
    or under ``root``/SUITE for the newest run with the same settings); refuses a folder that is not an
    interrupted run, or whose settings differ from ``cfg``'s, naming the keys that differ."""
    if cfg.resume is None:
        return None
    if cfg.resume == "auto" and cfg.output_dir is None:
        return next((p for p in _candidates(cfg, root) if read_run_file(p)["config_hash"] == config_hash(cfg)), None)
    if cfg.resume == "auto":  # output_dir's own interrupted run, else a fresh start there
        found = _candidates(cfg, root)
        if not found:
            return None
    folder = found[0] if cfg.resume == "auto" else Path(cfg.resume)
    if not folder.name.endswith(PARTIAL) and folder.with_name(folder.name + PARTIAL).is_dir():
        folder = folder.with_name(folder.name + PARTIAL)
    if not (folder / RUN_FILE).is_file():
        raise UserError(f"resume: '{cfg.resume}' is not an interrupted run's folder (expected NAME.partial holding "
                        f"{RUN_FILE}, left by an interrupted segbench run)")
    if folder.with_name(folder.name[:-len(PARTIAL)]).exists():
        raise UserError(f"resume: '{folder.name[:-len(PARTIAL)]}' already exists next to '{folder}'; the run "
                        "finished, or move that folder away")
    saved = read_run_file(folder)
    if saved["config_hash"] != config_hash(cfg):
        old, new = flatten(saved["settings"]), flatten(json.loads(json.dumps(hashed_values(cfg))))
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>"))
        shown = ", ".join(f"{k} ({old.get(k, 'unset')} -> {new.get(k, 'unset')})" for k in keys[:8])
        raise UserError(f"resume: the suite's settings changed since '{folder}' was interrupted: {shown}; resume "
                        "with the same settings, or start a fresh run without resume=")
    return folder


def finished_record(work_dir: Path, name: str) -> ModelRecord | None:
    """The record of model ``name`` if it finished in this run before it was interrupted, checked by the results
    schema as results.json will be (a damaged file is one line, not a half-read record)."""
    path = work_dir / "models" / f"{safe_name(name)}.json"
    return read_model(path) if path.is_file() else None


def keep_record(work_dir: Path, record: ModelRecord) -> None:
    """Persist a finished model's record (and drop its training state, no longer needed)."""
    _write_json(work_dir / "models" / f"{safe_name(record.name)}.json", plain(record, nan_as_null=False))
    for suffix in (".pt", ".json"):
        (work_dir / "state" / f"{safe_name(record.name)}{suffix}").unlink(missing_ok=True)


def model_run(work_dir: Path, name: str) -> str | None:
    """The MLflow run model ``name`` had when the run was interrupted, if it had started."""
    path = work_dir / "state" / f"{safe_name(name)}.json"
    return json.loads(path.read_text())["mlflow_run_id"] if path.is_file() else None


def note_model_run(work_dir: Path, name: str, run_id: str | None) -> None:
    _write_json(work_dir / "state" / f"{safe_name(name)}.json", {"mlflow_run_id": run_id})


def state_path(work_dir: Path, name: str) -> Path:
    return work_dir / "state" / f"{safe_name(name)}.pt"


def training_state(work_dir: Path | None, name: str) -> dict[str, Any] | None:
    """The training state model ``name`` was interrupted with, if one was written."""
    path = state_path(work_dir, name) if work_dir is not None else None
    return load_state(path) if path is not None and path.is_file() else None


def state_writer(work_dir: Path | None, name: str) -> Callable[[dict[str, Any], bool], Path | None]:
    """The ``save`` callback of ``train``: writes the state of model ``name`` (rank 0) and, when the run stops,
    says where it is and how to continue."""
    def save(state: dict[str, Any], stopping: bool) -> Path | None:
        if work_dir is None:
            return None
        path = save_state(state_path(work_dir, name), state)
        if stopping:
            print(f"segbench: training state of {name} at iteration {state['iteration']} saved in {path}; continue "
                  f"with: segbench run resume={work_dir} (and the same settings)", file=sys.stderr)
        return path
    return save


def clear_progress(work_dir: Path) -> None:
    """Remove what only a resume needs, once the run's results are written."""
    import shutil

    (work_dir / RUN_FILE).unlink(missing_ok=True)
    for folder in ("models", "state"):
        shutil.rmtree(work_dir / folder, ignore_errors=True)
