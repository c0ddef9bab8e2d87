"""What a number was measured under, per leaderboard row: the evaluation protocol (mode, window and stride, scales
and flip, label map, data-set hash, segbench version), the command that reproduces it, where its weights are, its
source and backbone family, and whether its speed was timed under load; and which suite settings differ between
runs (the gate names them the same way: ``suite settings differ: train.iters``)."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from functools import lru_cache

from segbench.config.schema import UNHASHED
from segbench.core.files import flatten
from segbench.results.schema import ModelRecord, Results

# Timed repeats spread wider than this share of their median: the machine was busy while timing. The gate's default
# speed tolerance (MAX_SPEED_DROP_PERCENT, 20 %), above which it notes "the machine was busy".
UNDER_LOAD_SPREAD = 0.20
NOT_A_SETTING = ("models",)  # which models ran: not a setting that changes their numbers


def differing_settings(configs: list[dict], leave_out: tuple[str, ...] = UNHASHED) -> list[str]:
    """Dotted config keys whose values differ between ``configs``, leaving out the sections in ``leave_out``
    (by default those that do not change the numbers)."""
    flat = [flatten(config) for config in configs]
    keys = set().union(*flat) if flat else set()
    return sorted(key for key in keys if key.split(".")[0] not in leave_out
                  and len({json.dumps(f.get(key), sort_keys=True, default=str) for f in flat}) > 1)


def under_load(spread: float | None, tolerance: float = UNDER_LOAD_SPREAD) -> bool:
    """True when timed repeats spread wider than ``tolerance`` (a share of their median): timed under load."""
    return spread is not None and spread > tolerance


def settings_key(config: dict) -> str:
    """A short hash of the settings that change the numbers, which models ran left out: runs of one schedule share
    it whatever models each ran."""
    kept = {k: v for k, v in flatten(config).items() if k.split(".")[0] not in UNHASHED + NOT_A_SETTING}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def dataset_hash(results: Results) -> str | None:
    """sha256 prefix of the evaluated data set's identity: its name, split, classes and data settings (the folder it
    was read from and the loader's workers left out); not a hash of the files."""
    if results.dataset is None:
        return None
    data = {k: v for k, v in (results.suite.config.get("data") or {}).items() if k not in ("root", "num_workers")}
    identity = [results.dataset.name, results.dataset.split, list(results.dataset.classes), data]
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_iters(results: Results, record: ModelRecord) -> int:
    """Optimiser steps behind the row: the record's training, else the suite's schedule when training ran, else 0."""
    if record.train is not None:
        return record.train.iters
    train = results.suite.config.get("train") or {}
    return int(train.get("iters") or 0) if train.get("enabled") else 0


@lru_cache(maxsize=64)
def _installed(suite: str) -> dict:
    """The flattened settings of the suite file segbench has under ``suite``; empty when it has none."""
    from segbench.config.schema import available_suites, read_config, to_dict
    from segbench.errors import UserError

    if suite not in available_suites():
        return {}
    try:
        return flatten(to_dict(read_config([f"suite={suite}"])))
    except UserError:  # the installed suite no longer reads: every setting is named
        return {}


def reproduce(results: Results, model: str) -> str:
    """The ``segbench run`` command that runs ``model`` under this run's settings (``segbench score`` for scored
    predictions): the suite, then every setting that differs from the suite file as installed (all of them when
    the suite is not one segbench knows)."""
    suite = results.suite.name
    mine = {k: v for k, v in flatten(results.suite.config).items()
            if k.split(".")[0] not in UNHASHED + NOT_A_SETTING}
    base = _installed(suite)
    changed = [f"{key}={json.dumps(value)}" for key, value in sorted(mine.items())
               if key not in base or json.dumps(base[key], default=str) != json.dumps(value, default=str)]
    if results.kind == "score":  # predictions made elsewhere: scored again from their folder
        record = next((m for m in results.models if m.name == model), None)
        folder = record.evaluation.pred_dir if record and record.evaluation else None
        return shlex.join(["segbench", "score", f"pred_dir={folder or model}", f"suite={suite}", *changed])
    return shlex.join(["segbench", "run", f"suite={suite}", f"models=[{model}]", *changed])


def weights_link(record: ModelRecord) -> str | None:
    """Where the row's weights are: the published URL, the hub page of a hub model, the loaded file, or the
    checkpoint saved after training (relative to the run's folder)."""
    origin = record.origin.weights if record.origin else {}
    if origin.get("url"):
        return str(origin["url"])
    if origin.get("kind") == "hub" and ":" in record.name:
        return f"https://huggingface.co/{record.name.split(':', 1)[1]}"
    if origin.get("path"):
        return str(origin["path"])
    if record.weights and record.weights.model:
        return record.weights.model.file
    return record.checkpoint.path if record.checkpoint else None


def family(backbone: str | None, model: str) -> str:
    """The backbone family (resnet, mobilenetv3, convnext, ...); published models without a timm backbone go by
    their source (hf, torchvision, ...)."""
    if backbone:
        found = re.match(r"[a-z]*?v\d+(?=_|$)|[a-z]+", backbone.lower())  # mobilenetv3_small_050: mobilenetv3
        if found:
            return found.group(0)
    return model.split(":")[0] if ":" in model else "-"


def protocol(results: Results, record: ModelRecord) -> dict:
    """The row's protocol columns: how it was evaluated and with what, as plain values."""
    evaluation = record.evaluation
    config_eval = results.suite.config.get("eval") or {}
    label_map = (record.origin.label_mapping if record.origin else {}) or config_eval.get("class_map") or {}
    size = lambda pair: "x".join(map(str, pair)) if pair else None  # noqa: E731
    return {
        "dataset": results.dataset.name if results.dataset else None,
        "split": (evaluation.split if evaluation and evaluation.split else None)
        or (results.dataset.split if results.dataset else None),
        "dataset_hash": dataset_hash(results),
        "eval_window": size(evaluation.window) if evaluation else None,
        "eval_stride": size(evaluation.stride) if evaluation else None,
        "eval_resize": size(evaluation.resize) if evaluation else None,
        "eval_scales": ",".join(f"{s:g}" for s in (evaluation.scales or config_eval.get("scales") or [1.0]))
        if evaluation else None,
        "eval_flip": bool(evaluation.flip if evaluation and evaluation.flip is not None else config_eval.get("flip")),
        "label_map": json.dumps(label_map, sort_keys=True) if label_map else "identity",
        "train_iters": train_iters(results, record),
        "crop_size": size((results.suite.config.get("data") or {}).get("crop_size")),
        "settings_key": settings_key(results.suite.config),
        "origin": record.origin.source if record.origin else ("predictions" if record.source else "segbench"),
        "family": family(record.backbone, record.name),
        "weights_link": weights_link(record),
        "reproduce": reproduce(results, record.name),
    }
