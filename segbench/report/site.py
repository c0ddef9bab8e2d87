"""What a suite page offers to choose from: its settings (the suite's configuration less which models ran), each
named by the settings that differ between them, the default one (the latest full schedule: most training
iterations, then the newest), the sources and backbone families to filter by, and the protocol behind each
settings' numbers. Rows of different settings never rank beside each other: each is ranked within its settings."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from segbench.config.schema import UNHASHED
from segbench.core.files import flatten
from segbench.report.exports import PROTOCOL
from segbench.report.protocol import NOT_A_SETTING, differing_settings

PER_MODEL = ("reproduce", "config_hash")  # protocol entries that differ by model: shown in the row, not the block


@dataclass
class Choice:
    """One settings of a suite: its key, a label naming what differs from the others, its rows' count, whether it
    is the default, and the training iterations behind it."""

    key: str
    label: str
    rows: int
    default: bool
    train_iters: int


def _value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def choices(frame: pd.DataFrame) -> tuple[list[Choice], list[str]]:
    """The suite's settings, the default first, and the config keys that differ between them."""
    groups = frame.groupby("settings_key", sort=False)
    configs = {key: group["config"].iloc[0] for key, group in groups}
    differ = differing_settings(list(configs.values()), UNHASHED + NOT_A_SETTING)
    order = sorted(configs, key=lambda key: (-int(groups.get_group(key)["train_iters"].max()),
                                             -float(groups.get_group(key)["time"].max())))
    found = []
    for key in order:
        flat = flatten(configs[key])
        named = ", ".join(f"{name}={_value(flat.get(name))}" for name in differ) or f"settings {key}"
        iters = int(groups.get_group(key)["train_iters"].max())
        found.append(Choice(key, named, len(groups.get_group(key)), key == order[0], iters))
    return found, differ


def default_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the default settings (the latest full schedule), best mIoU first."""
    found, _ = choices(frame)
    return frame[frame["settings_key"] == found[0].key]


def ranks(frame: pd.DataFrame) -> pd.Series:
    """Each row's rank by mIoU among the rows of its settings (1 is best; rows without mIoU unranked)."""
    return frame.groupby("settings_key")["mIoU"].rank(ascending=False, method="min")


def options(frame: pd.DataFrame, column: str) -> list[str]:
    """The distinct values of a filter column, sorted."""
    return sorted({str(value) for value in frame[column]})


def protocol_block(frame: pd.DataFrame, found: list[Choice]) -> list[dict]:
    """The protocol of each settings' numbers: per protocol entry, its values per settings (distinct values of the
    rows joined), and whether they differ between settings."""
    block = []
    for column, label in PROTOCOL.items():
        if column in PER_MODEL or column not in frame:
            continue
        values = []
        for choice in found:
            seen = frame.loc[frame["settings_key"] == choice.key, column]
            values.append(", ".join(dict.fromkeys("-" if v is None or v != v else str(v) for v in seen)))
        block.append({"label": label, "values": values, "differ": len(set(values)) > 1})
    return block
