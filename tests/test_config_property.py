"""A property of the configuration: for generated overrides over every key (wrong types, NaN, infinities, negatives,
zero, empty lists, huge values, unknown names), the command stopped right after its checks exits 0 or 2, never 3 (an
internal error), and a refusal is one line that creates nothing.

The command is the real entry point (``segbench run`` / ``bench``) with the suite runner replaced by a stub: what runs
is every check the CLI makes before any work. The example budget is small for CI (``SEGBENCH_PROPERTY_EXAMPLES``
raises it); what it found is kept below as explicit regression cases."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from segbench.config.schema import SuiteConfig  # noqa: E402

BASE = ["models=[unet-resnet10t]", "progress=false", "train.iters=1", "data.train_samples=2", "data.val_samples=2"]
EXAMPLES = int(os.environ.get("SEGBENCH_PROPERTY_EXAMPLES", "40"))


def leaf_keys(schema: type = SuiteConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the suite schema, sections included (``train=5`` is a mistake worth generating)."""
    keys = []
    for f in dataclasses.fields(schema):
        keys.append(prefix + f.name)
        factory = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(factory):
            keys += leaf_keys(factory, f"{prefix}{f.name}.")
    return keys


KEYS = leaf_keys()
HOSTILE = ["nan", "inf", "-inf", "-1", "0", "1e30", "99999999999999999999", "-0.5", "abc", "null", "true", "''",
           "[]", "[nan]", "[inf]", "[-1]", "[0]", "[65536]", "[1.0,nan]", "[1,2,3]", "{}", "{a: 1}", "{1: -5}",
           "[[1,2]]", "cudaXYZ", "1/0", "-1/2", "../../x"]
scalars = st.one_of(st.sampled_from(HOSTILE), st.integers(-2**40, 2**40).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr))
values = st.one_of(scalars, st.lists(scalars, max_size=3).map(lambda items: "[" + ",".join(items) + "]"))
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS).map(lambda k: k + "x"),
                 st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8})?", fullmatch=True))
overrides = st.lists(st.builds(lambda k, v: f"{k}={v}", keys, values), min_size=1, max_size=3)

# Found by this test before every value was declared with its type and range (each was an exit 3), and the cases
# of issue 18: kept as explicit regression cases.
FOUND = [
    ["models={}"], ["models={a: 1}"], ["weights=[]"], ["backbone_weights=[1,2,3]"], ["eval.class_map=[]"],
    ["data.label_map=[1]"], ["train.loss=[]"], ["backbone_key_map=[0]"],
    ["device=cudaXYZ"], ["train.lr=nan"], ["seed=-1"], ["train.weight_decay=-1"], ["train.momentum=-1"],
    ["data.num_workers=-1"], ["eval.scales=[nan]"], ["eval.scales=[inf]"], ["train.class_weights=[1.0,2.0]"],
    ["eval.calibration_bins=99999999999999999999"], ["bench.batch_sizes=[65536]"], ["bench.min_seconds=inf"],
    ["train.min_lr=5"], ["train.poly_power=nan"], ["data.spacing=[1.0,nan]"], ["train=5"], ["data.image_size=1e30"],
]


@pytest.fixture
def stopped_cli(cli, monkeypatch):
    """The CLI with the suite runner stubbed: a command stops right after its checks."""
    import segbench.pipeline.runner as runner

    monkeypatch.setattr(runner, "run", lambda cfg: None)
    monkeypatch.setattr(runner, "bench", lambda cfg: None)
    return cli


def check(cli, tmp: Path, command: str, items: list[str]) -> None:
    """Exit 0 or 2, never 3; a refusal is one ``segbench: error:`` line; nothing is created in the working folder."""
    before = Path.cwd()
    os.chdir(tmp)
    try:
        code, _, err = cli(command, *BASE, *items)
    finally:
        os.chdir(before)
    assert code in (0, 2), f"{command} {items}: exit {code}: {err.strip()[-300:]}"
    if code == 2:
        assert err.startswith("segbench: error: ") and err.strip().count("\n") == 0, err
    assert not any(tmp.iterdir()), f"{command} {items} created {sorted(p.name for p in tmp.iterdir())}"


@pytest.mark.parametrize("items", FOUND, ids=[" ".join(i) for i in FOUND])
def test_found_cases_exit_0_or_2_and_create_nothing(stopped_cli, tmp_path, items):
    check(stopped_cli, tmp_path, "run", items)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(command=st.sampled_from(["run", "bench"]), items=overrides)
def test_generated_overrides_exit_0_or_2_and_create_nothing(stopped_cli, tmp_path_factory, command, items):
    check(stopped_cli, tmp_path_factory.mktemp("cwd"), command, items)
