"""A suite's speed measurement of one model: one record per backend and batch size, in this process or in a fresh
one (``bench.isolate``: models timed in one process share allocator state and cuDNN's choices, timm#955).

Every model of a suite of two or more is timed alternately with the suite's reference model (``reference_name``:
its built-in model with the fewest parameters, the cheapest to time alongside), block by block, so that the gate
can compare each model's speed as a ratio to the reference measured at the same moments.

The isolated child is ``python -m segbench.deploy.speed REQUEST RESULT``: it reads the resolved suite and the
model's name from REQUEST (JSON), builds the model, times it and writes its records to RESULT (JSON), or the error
that stopped it (a user's mistake keeps its one line).
"""

from __future__ import annotations

import functools
import gc
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from segbench.config.schema import SuiteConfig, to_dict
from segbench.config.typed import plain
from segbench.core.files import atomic_write
from segbench.core.plugins import import_modules, users_failure
from segbench.deploy.backends import BackendUnavailable
from segbench.deploy.timing import Reference, TimingPlan, measure_throughput
from segbench.errors import UserError, warn
from segbench.results.speed import SkippedBackend, Speed


def speed_records(model: torch.nn.Module, cfg: SuiteConfig, image_size: tuple[int, int], device: torch.device,
                  name: str = "model") -> tuple[list[Speed], list[SkippedBackend]]:
    """The suite's throughput measurement: one record per backend and batch size, and the backends that could not
    run here with their reasons (a warning each)."""
    height, width = cfg.bench.input_size or image_size
    records, skipped = [], []
    reference = _reference(cfg, name)
    for backend in cfg.bench.backends:
        try:
            for batch in cfg.bench.batch_sizes:
                records.append(measure_throughput(model, (batch, 3, height, width), device,
                                                  TimingPlan.from_bench(cfg.bench, backend),
                                                  reference))
        except BackendUnavailable as exc:
            skipped.append(SkippedBackend(backend=backend, reason=exc.reason))
            warn(f"{name}: backend {backend} not timed: {exc.reason}")
        except UserError as exc:
            raise UserError(f"{name}: {exc}") from None
    return records, skipped


def _classes(cfg: SuiteConfig) -> int:
    from segbench.data.registry import dataset_info

    return len(dataset_info(cfg.data).classes)


@functools.lru_cache(maxsize=8)
def _fewest_parameters(models: tuple[str, ...], num_classes: int) -> str | None:
    from segbench.models.factory import build
    from segbench.models.registry import parse_spec

    counts = {}
    for name in models:
        spec = parse_spec(name)
        if spec.external:
            continue
        try:
            with torch.device("meta"):  # no memory, no initialisation cost
                counts[spec.name] = sum(p.numel() for p in build(spec, num_classes, "random").module.parameters())
        except Exception:  # a model that cannot be built on the meta device is not a candidate
            continue
    return min(counts, key=counts.get) if counts else None


def reference_name(cfg: SuiteConfig) -> str | None:
    """The suite's reference model for interleaved timing: its built-in model with the fewest parameters (the first
    of equals); None for a suite of one model or of published models only."""
    if len(cfg.models) < 2:
        return None
    return _fewest_parameters(tuple(cfg.models), _classes(cfg))


def _reference(cfg: SuiteConfig, name: str) -> Reference | None:
    """The reference to time alternately with model ``name`` (random weights), or None: no reference, or it is
    ``name`` itself."""
    from segbench.models.factory import build

    chosen = reference_name(cfg)
    if chosen is None or chosen == name:
        return None
    return Reference(chosen, build(chosen, _classes(cfg), "random").module)


def time_model(cfg: SuiteConfig, name: str, image_size: tuple[int, int],
               device: torch.device) -> tuple[list[Speed], list[SkippedBackend]]:
    """Build model ``name`` of ``cfg`` (random weights; a published model's own) and time it in this process."""
    from segbench.data.registry import dataset_info
    from segbench.models.factory import build
    from segbench.models.registry import parse_spec

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    spec = parse_spec(name)
    model = build(spec, dataset_info(cfg.data).classes, "load",
                  weights=cfg.weights.get(spec.name) if spec.external else None, class_map=cfg.eval.class_map).module
    return speed_records(model, cfg, image_size, device, name)


def time_isolated(cfg: SuiteConfig, name: str, image_size: tuple[int, int],
                  device: torch.device) -> tuple[list[Speed], list[SkippedBackend]]:
    """``time_model`` in a fresh Python process; its records come back through a temporary JSON file."""
    with tempfile.TemporaryDirectory(prefix="segbench-speed-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request.write_text(json.dumps({"config": to_dict(cfg), "model": name, "image_size": list(image_size),
                                       "device": str(device), "sys_path": sys.path}))
        child = subprocess.Popen([sys.executable, "-m", "segbench.deploy.speed", str(request), str(result)])
        try:
            code = child.wait()
        except BaseException:  # interrupted: the child goes too
            child.kill()
            child.wait()
            raise
        data = json.loads(result.read_text()) if result.is_file() else {"error": f"exit code {code}, no result"}
    if "error" in data:
        if data.get("user"):
            raise UserError(data["error"])
        raise RuntimeError(f"timing {name} in a fresh process failed: {data['error']}")
    return ([Speed.model_validate(record | {"isolated": True}) for record in data["speed"]],
            [SkippedBackend.model_validate(record) for record in data["skipped"]])


def config_from_dict(values: dict) -> SuiteConfig:
    """A resolved suite (``to_dict``) back as a SuiteConfig."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SuiteConfig), values))


def main(request_path: str, result_path: str) -> int:
    """The isolated child: time one model, write its records (or its error) to ``result_path``."""
    request = json.loads(Path(request_path).read_text())
    try:
        cfg = config_from_dict(request["config"])
        sys.path.extend(p for p in request.get("sys_path", []) if p not in sys.path)
        import_modules(cfg.imports)  # the user's registered models, found where the parent found them
        speed, skipped = time_model(cfg, request["model"],
                                    tuple(request["image_size"]), torch.device(request["device"]))
        out, code = {"speed": plain(speed, nan_as_null=False), "skipped": plain(skipped)}, 0
    except KeyboardInterrupt:  # Ctrl-C reached the child too: the parent reports it
        return 130
    except UserError as exc:
        out, code = {"error": str(exc), "user": True}, 2
    except Exception as exc:
        users = users_failure(exc)  # the user's model failed, not segbench: the line it gets in one process
        if users is not None:
            out, code = {"error": users, "user": True}, 2
        else:
            out, code = {"error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"}, 3
    atomic_write(result_path, json.dumps(out, allow_nan=True))
    return code


if __name__ == "__main__":
    code = main(*sys.argv[1:3])
    gc.freeze()  # the process ends here: see segbench.cli.main.console_script
    sys.exit(code)
