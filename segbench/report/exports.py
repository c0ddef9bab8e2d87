"""The leaderboard in formats other tools read, from the same rows as the leaderboard: per model a Hugging Face
model card's ``model-index`` block, one MMSegmentation-style ``metafile.yaml`` per suite, and for robustness runs
RobustBench-style JSON per model with an unaggregated corruption x severity CSV.

Every number carries its protocol (evaluation mode, window and stride, scales and flip, label map, data-set hash,
segbench version, the command that reproduces it): in the format's own fields where it has them (the model card's
``dataset.revision`` and ``metric args``), else in a ``Notes`` / ``footnote`` field. Quality is in percent, rounded
as the leaderboard shows it (two decimals).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import yaml

from segbench.core.files import atomic_write
from segbench.core.names import safe_name

FORMATS = ("hf", "mmseg", "robustbench")
METRICS = {"mIoU": "mean_iou", "mDice": "mean_dice", "aAcc": "overall_accuracy", "mAcc": "mean_accuracy",
           "fwIoU": "frequency_weighted_iou"}  # leaderboard column -> model-index metric type
PROTOCOL = {  # row column -> protocol key
    "eval_mode": "mode", "eval_window": "window", "eval_stride": "stride", "eval_resize": "resize",
    "eval_scales": "scales", "eval_flip": "flip", "label_map": "label map", "label_space": "label space",
    "ignore_index": "ignore index", "accumulation": "accumulation", "absent_class": "absent classes",
    "dataset": "dataset", "split": "split", "dataset_hash": "dataset hash", "config_hash": "config hash",
    "train_iters": "train iters", "segbench": "segbench version", "reproduce": "reproduce",
}


def parse_formats(text: str | None) -> tuple[str, ...]:
    """``hf,mmseg,robustbench`` as a tuple (all of them for None or ``all``; none for ``none``)."""
    from segbench.errors import UserError, closest

    if text is None or text.strip() == "all":
        return FORMATS
    if text.strip() == "none":
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    for name in names:
        if name not in FORMATS:
            hints = closest(name, FORMATS)
            raise UserError(f"--export: unknown format '{name}'" + (f"; did you mean '{hints[0]}'?" if hints else "")
                            + f"; expected a comma-separated list of {', '.join(FORMATS)}, or all or none")
    return names


class _Dumper(yaml.SafeDumper):
    """Each value written where it is used: no YAML anchors and aliases, which some readers do not follow."""

    def ignore_aliases(self, data) -> bool:
        return True


def _yaml(data: dict) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)


def _plain(value):
    """A JSON/YAML-safe value: NaN and None as None, numpy numbers as Python numbers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _pct(value) -> float | None:
    value = _plain(value)
    return None if value is None else round(100 * float(value), 2)


def protocol(row: pd.Series) -> dict:
    """The protocol of a row's numbers, missing settings left out."""
    return {label: _plain(row.get(column)) for column, label in PROTOCOL.items()
            if _plain(row.get(column)) is not None}


def note(row: pd.Series) -> str:
    """The protocol as one line, for formats without a place for it."""
    return "; ".join(f"{key}: {value}" for key, value in protocol(row).items())


def model_index(row: pd.Series) -> dict:
    """A model card's metadata for one row: ``model-index`` with one result (semantic segmentation on the suite's
    data set), each metric with its value in percent; the protocol in ``dataset.revision`` (the data-set hash) and
    in each metric's ``args``."""
    args = protocol(row)
    metrics = [{"type": kind, "value": _pct(row.get(column)), "name": column, "args": args}
               for column, kind in METRICS.items() if _pct(row.get(column)) is not None]
    dataset = {"name": str(row["dataset"] or row["suite"]), "type": str(row["dataset"] or row["suite"]),
               "split": str(row["split"] or "val")}
    if _plain(row.get("dataset_hash")):
        dataset["revision"] = str(row["dataset_hash"])
    result = {"task": {"type": "semantic-segmentation", "name": "Semantic Segmentation"}, "dataset": dataset,
              "metrics": metrics}
    return {"tags": ["segbench", "semantic-segmentation"],
            "model-index": [{"name": str(row["model"]), "results": [result]}]}


def model_card(row: pd.Series) -> str:
    """A model card (README.md): the ``model-index`` front matter, then the protocol in prose."""
    front = _yaml(model_index(row))
    lines = [f"# {row['model']} on {row['suite']}", "", "Evaluated by segbench under this protocol:", ""]
    lines += [f"- {key}: `{value}`" for key, value in protocol(row).items()]
    return f"---\n{front}---\n\n" + "\n".join(lines) + "\n"


def _ms_per_image(row: pd.Series) -> float | None:
    latency, batch = _plain(row.get("latency_ms_p50")), _plain(row.get("batch_size"))
    return round(latency / batch, 3) if latency is not None and batch else None


def metafile(frame: pd.DataFrame, suite: str) -> dict:
    """An MMSegmentation-style metafile: a Collection per architecture, a Model per row with its Results
    (``mIoU`` single-scale, ``mIoU(ms+flip)`` when evaluated at several scales with flip), Config (the command
    that reproduces it), Weights and Metadata; the protocol in ``Notes``."""
    collections, models = {}, []
    for _, row in frame.iterrows():
        arch = str(row.get("arch") or row["origin"] or "model")
        collections.setdefault(arch, {"Name": arch, "Metadata": {"Training Data": [str(row["dataset"] or suite)]}})
        tta = "," in str(row.get("eval_scales") or "") and bool(row.get("eval_flip"))
        metrics = {"mIoU(ms+flip)" if tta else "mIoU": _pct(row["mIoU"])}
        batch = _plain(row.get("batch_size"))
        inference = {"value": _ms_per_image(row), "hardware": _plain(row.get("hardware")),
                     "backend": "PyTorch", "batch size": None if batch is None else int(batch),
                     "mode": str(_plain(row.get("precision")) or "fp32").upper(),
                     "resolution": _plain(row.get("input_shape")), "timed under load": bool(row["under_load"])}
        metadata = {"backbone": _plain(row.get("backbone")), "crop size": _plain(row.get("crop_size")),
                    "lr schd": int(row["train_iters"]), "inference time (ms/im)": [inference],
                    "inference memory (MB)": _plain(row.get("peak_memory_mb"))}
        models.append({"Name": str(row["label"]).replace(" @", "-"), "In Collection": arch,
                       "Results": [{"Task": "Semantic Segmentation", "Dataset": str(row["dataset"] or suite),
                                    "Metrics": metrics}],
                       "Config": str(row["reproduce"]), "Weights": _plain(row.get("weights_link")),
                       "Metadata": metadata, "Notes": note(row)})
    return {"Collections": list(collections.values()), "Models": models}


def robustbench(row: pd.Series) -> tuple[dict, list[dict]] | None:
    """A RobustBench-style model JSON (clean and corrupted mIoU in percent, as text as RobustBench writes them)
    and the unaggregated rows (model, corruption, severity, mIoU as a fraction); None without corruptions."""
    record = row.get("robustness")
    if not isinstance(record, dict) or not record.get("conditions"):
        return None
    name = str(row.get("label", row["model"])).replace(" @", "-")
    cells = [{"model": name, "corruption": c["corruption"], "severity": int(c["severity"]),
              "mIoU": _plain(c["metrics"].get("mIoU"))} for c in record["conditions"]]
    info = {"name": name, "link": _plain(row.get("weights_link")) or "",
            "architecture": str(row.get("arch") or row["model"]), "dataset": str(row["dataset"]),
            "threat_model": "corruptions", "clean_acc": f"{_pct(row['mIoU']):.2f}",
            "corruptions_acc": f"{_pct(record['mPC']):.2f}" if record.get("mPC") is not None else None,
            "rPC": _plain(record.get("rPC")), "corruptions": record.get("corruptions"),
            "severities": record.get("severities"), "metric": "mIoU", "corruption package": record.get("package"),
            "reported": "", "additional_data": False, "number_forward_passes": 1, "footnote": note(row)}
    return info, cells


def file_name(label: str) -> str:
    """A row's label (``model @config-hash``) as a file name: ``model-config-hash``."""
    return safe_name(str(label).replace(" @", "-"))


def write_exports(frame: pd.DataFrame, suite: str, folder: Path, formats: tuple[str, ...]) -> list[Path]:
    """Write the suite's exports under ``folder`` (``huggingface/<model>/README.md``, ``metafile.yaml``,
    ``robustbench/<model>.json`` and ``robustbench/unaggregated_results.csv``); return the files written."""
    written = []
    frame = frame if "label" in frame else frame.assign(label=frame["model"])
    names = frame["label"]
    if "hf" in formats:
        for name, (_, row) in zip(names, frame.iterrows()):
            written.append(atomic_write(folder / "huggingface" / file_name(name) / "README.md", model_card(row)))
    if "mmseg" in formats:
        written.append(atomic_write(folder / "metafile.yaml", _yaml(metafile(frame, suite))))
    if "robustbench" in formats:
        cells = []
        for name, (_, row) in zip(names, frame.iterrows()):
            found = robustbench(row)
            if found:
                info, rows = found
                written.append(atomic_write(folder / "robustbench" / f"{file_name(name)}.json",
                                            json.dumps(info, indent=2) + "\n"))
                cells += rows
        if cells:
            written.append(atomic_write(folder / "robustbench" / "unaggregated_results.csv",
                                        pd.DataFrame(cells).to_csv(index=False)))
    return written
