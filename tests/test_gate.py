import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from segbench.errors import UserError
from segbench.gate.compare import GatePolicy, gate, parse_max_drops, same_images, update_baseline
from segbench.gate.render import text, write_summary
from segbench.results.schema import parse_results, write_results


def write(path, data: dict):
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def baseline(tmp_path, images, record, results):
    return write(tmp_path / "baseline.json", results(record("unet-r10", *images(50, 0.6)),
                                                      record("fpn-r10", *images(50, 0.5, seed=1), ips=200.0)))


def statuses(result) -> dict:
    return {(row.model, row.check): row.status for row in result.checks.itertuples()}


def test_an_improvement_passes(tmp_path, baseline, images, record, results):
    run = write(tmp_path / "run.json", results(record("unet-r10", *images(50, 0.65)),
                                               record("fpn-r10", *images(50, 0.5, seed=1), ips=200.0)))
    result = gate(run, baseline)
    assert result.passed and result.exit_code == 0
    row = result.checks.set_index(["model", "check"]).loc[("unet-r10", "mIoU")]
    assert row["change"] == pytest.approx(5.0, abs=0.05)  # percentage points
    assert row["ci_low"] > 0 and row["status"] == "ok"


def test_a_regression_beyond_tolerance_fails(tmp_path, baseline, images, record, results):
    run = write(tmp_path / "run.json", results(record("unet-r10", *images(50, 0.58)),
                                               record("fpn-r10", *images(50, 0.5, seed=1), ips=200.0)))
    result = gate(run, baseline)
    assert not result.passed and result.exit_code == 1
    assert statuses(result)[("unet-r10", "mIoU")] == "fail"
    assert statuses(result)[("fpn-r10", "mIoU")] == "ok"
    row = result.checks.set_index(["model", "check"]).loc[("unet-r10", "mIoU")]
    assert row["change"] == pytest.approx(-2.0, abs=0.05) and row["limit"] == -0.5 and row["unit"] == "pp"


def test_tolerance_is_in_percentage_points(tmp_path, record, results):
    union = np.full((10, 3), 200)
    base = write(tmp_path / "base.json", results(record("m", np.full((10, 3), 120), union)))  # mIoU 0.600
    half = write(tmp_path / "half.json", results(record("m", np.full((10, 3), 119), union)))  # 0.595: -0.5 pp
    one = write(tmp_path / "one.json", results(record("m", np.full((10, 3), 118), union)))  # 0.590: -1.0 pp
    assert gate(half, base).passed
    assert not gate(one, base).passed
    assert gate(one, base, GatePolicy(max_drop_points={"mIoU": 1.0})).passed


def test_max_drops_from_the_command_line():
    assert parse_max_drops([]) == {"mIoU": 0.5}
    assert parse_max_drops(["mIoU=1", "mDice = 0.25"]) == {"mIoU": 1.0, "mDice": 0.25}
    for bad in ("mIoU", "mIoU=half"):
        with pytest.raises(UserError, match="METRIC=POINTS"):
            parse_max_drops([bad])
    with pytest.raises(UserError, match="non-negative"):
        GatePolicy(max_drop_points=parse_max_drops(["mIoU=-1"]))
    with pytest.raises(UserError, match="exclude each other"):
        GatePolicy(absolute_speed=True, reference_model="m")
    with pytest.raises(UserError, match=r"--max-speed-drop must be a percentage in \[0, 100\], got 150"):
        GatePolicy(max_speed_drop_percent=150)


def test_a_drop_from_one_image_is_noise_when_significance_is_required(tmp_path, baseline, images, record, results):
    intersection, union = images(50, 0.6)
    intersection[7] = 0  # one image goes wrong: the drop (about 1.2 points) rests on a single image
    run = write(tmp_path / "run.json", results(record("unet-r10", intersection, union),
                                               record("fpn-r10", *images(50, 0.5, seed=1), ips=200.0)))
    assert not gate(run, baseline).passed
    result = gate(run, baseline, GatePolicy(require_significant=True))
    assert result.passed
    row = result.checks.set_index(["model", "check"]).loc[("unet-r10", "mIoU")]
    assert row["status"] == "noise" and row["change"] < -0.5 and row["ci_high"] >= 0
    assert result.settings["paired"]


def test_a_consistent_drop_is_significant(tmp_path, baseline, images, record, results):
    run = write(tmp_path / "run.json", results(record("unet-r10", *images(50, 0.58)),
                                               record("fpn-r10", *images(50, 0.5, seed=1), ips=200.0)))
    result = gate(run, baseline, GatePolicy(require_significant=True))
    assert statuses(result)[("unet-r10", "mIoU")] == "fail"


def test_different_images_are_compared_unpaired(tmp_path, baseline, images, record, results):
    other = results(record("unet-r10", *images(50, 0.6, seed=5)), record("fpn-r10", *images(50, 0.5, seed=6),
                                                                           ips=200.0), seed=1)
    assert not same_images(parse_results(other), parse_results(json.loads(baseline.read_text())))
    result = gate(write(tmp_path / "run.json", other), baseline)
    assert not result.settings["paired"]
    assert "unpaired (different images)" in text(result)
    assert "suite settings differ (config hash hash1 vs baseline hash0): seed" in result.notes


def test_a_model_missing_from_the_run_fails(tmp_path, baseline, images, record, results):
    run = write(tmp_path / "run.json", results(record("unet-r10", *images(50, 0.6)), record("new-r10",
                                                                                           *images(50, 0.7))))
    result = gate(run, baseline)
    assert result.exit_code == 1
    assert statuses(result)[("fpn-r10", "present")] == "missing"
    assert statuses(result)[("new-r10", "present")] == "new"


def test_a_missing_baseline_is_a_user_error(tmp_path, images, record, results):
    run = write(tmp_path / "run.json", results(record("m", *images(5, 0.6))))
    with pytest.raises(UserError, match=r"baseline: no results file at .*nope\.json.*segbench baseline update"):
        gate(run, tmp_path / "nope.json")


def test_a_corrupt_baseline_is_a_user_error(tmp_path, images, record, results):
    run = write(tmp_path / "run.json", results(record("m", *images(5, 0.6))))
    (tmp_path / "bad.json").write_text('{"models": [')
    with pytest.raises(UserError, match="not valid JSON"):
        gate(run, tmp_path / "bad.json")
    (tmp_path / "foreign.json").write_text('{"accuracy": 0.9}')
    with pytest.raises(UserError, match="not a segbench results.json"):
        gate(run, tmp_path / "foreign.json")


def test_other_suites_and_bad_options_are_user_errors(tmp_path, baseline, images, record, results):
    other = write(tmp_path / "run.json", results(record("unet-r10", *images(50, 0.6)), suite="cityscapes"))
    with pytest.raises(UserError, match="suite 'cityscapes'"):
        gate(other, baseline)
    with pytest.raises(UserError, match="did you mean 'mIoU'"):
        gate(baseline, baseline, GatePolicy(max_drop_points={"miou": 0.5}))
    with pytest.raises(UserError, match="reference model 'unet'"):
        gate(baseline, baseline, GatePolicy(reference_model="unet"))


def row_of(result, model: str, check: str = "speed"):
    return result.checks.set_index(["model", "check"]).loc[(model, check)]


def test_speed_is_a_ratio_to_the_baselines_fastest_model_by_default(tmp_path, baseline, images, record, results):
    same = images(50, 0.6), images(50, 0.5, seed=1)
    slow_machine = write(tmp_path / "slow.json", results(record("unet-r10", *same[0], ips=50.0),
                                                         record("fpn-r10", *same[1], ips=100.0)))
    result = gate(slow_machine, baseline)  # raw images/s halved for both: the machine, not the code
    assert result.passed and (result.speed.mode, result.speed.reference) == ("ratio", "fpn-r10")
    assert statuses(result)[("fpn-r10", "speed")] == "reference"
    row = row_of(result, "unet-r10")
    assert (row["baseline"], row["run"], row["change"]) == (0.5, 0.5, 0.0)
    assert "ratio to fpn-r10's in the same run (the baseline's fastest model timed in both" in text(result)
    absolute = gate(slow_machine, baseline, GatePolicy(absolute_speed=True))
    assert not absolute.passed and absolute.speed.mode == "absolute"
    assert row_of(absolute, "unet-r10")["change"] == pytest.approx(-50.0)
    assert "raw images/s of run against baseline (asked for with --absolute-speed)" in text(absolute)

    slower_model = write(tmp_path / "slower.json", results(record("unet-r10", *same[0], ips=60.0),
                                                           record("fpn-r10", *same[1], ips=200.0)))
    result = gate(slower_model, baseline)
    assert not result.passed
    row = row_of(result, "unet-r10")
    assert row["change"] == pytest.approx(-40.0) and row["status"] == "fail"
    assert row["note"].startswith("-40.0% beyond the -20% limit and beyond the noise")
    assert not gate(slower_model, baseline, GatePolicy(reference_model="fpn-r10")).passed
    assert gate(slower_model, baseline, GatePolicy(max_speed_drop_percent=50)).passed
    assert gate(slower_model, baseline, GatePolicy(max_speed_drop_percent=None)).passed
    assert gate(slower_model, baseline, GatePolicy(max_speed_drop_percent=100)).speed.mode == "off"


def timed(data: dict, repeats: list[float], reference: list[float] | None = None, model: int = 0) -> dict:
    """Set the timed repeats of ``data``'s model number ``model`` (and its interleaved reference's, fpn-r10)."""
    speed = data["models"][model]["speed"][0]
    speed.update(images_per_second=float(np.median(repeats)), images_per_second_repeats=repeats,
                 spread=(max(repeats) - min(repeats)) / np.median(repeats))
    if reference is not None:
        speed.update(reference_model="fpn-r10", reference_images_per_second_repeats=reference)
    return data


def test_speed_drop_within_timing_noise(tmp_path, baseline, images, record, results):
    base = write(tmp_path / "base.json", timed(json.loads(baseline.read_text()), [60.0, 100.0, 140.0]))
    same = images(50, 0.6), images(50, 0.5, seed=1)
    noisy = write(tmp_path / "noisy.json", timed(results(record("unet-r10", *same[0]), record("fpn-r10", *same[1],
                                                                                          ips=200.0)),
                                                 [50.0, 70.0, 120.0]))
    result = gate(noisy, base)  # the median fell by 30 %, but the repeats overlap
    row = row_of(result, "unet-r10")
    assert result.passed and row["status"] == "noise" and row["change"] == pytest.approx(-30.0)
    assert row["ci_high"] == pytest.approx(100 * (120 / 60 - 1)) and "repeats overlap" in row["note"]
    assert "unet-r10 (baseline 80%, run 100%)" in " ".join(result.notes)
    steady = write(tmp_path / "steady.json", timed(json.loads(baseline.read_text()), [98.0, 100.0, 102.0]))
    slower = write(tmp_path / "slower.json", timed(results(record("unet-r10", *same[0]),
                                                           record("fpn-r10", *same[1], ips=200.0)), [50, 52, 55]))
    row = row_of(gate(slower, steady), "unet-r10")
    assert row["status"] == "fail" and row["ci_high"] == pytest.approx(100 * (55 / 98 - 1))
    # Every repeat slower, but the baseline's repeats disagree by 80 %: the drop (48 %) is inside the noise floor.
    row = row_of(gate(slower, base), "unet-r10")
    assert row["status"] == "noise" and row["ci_high"] < 0 and "within the noise floor 80%" in row["note"]


def test_interleaved_reference_cancels_a_machine_busy_in_some_blocks(tmp_path, images, record, results):
    same = images(50, 0.6), images(50, 0.5, seed=1)

    def suite(unet: list[float], fpn_alongside: list[float]) -> dict:
        return timed(results(record("unet-r10", *same[0]), record("fpn-r10", *same[1], ips=200.0)), unet,
                     fpn_alongside)

    base = write(tmp_path / "base.json", suite([100.0, 100.0, 100.0], [200.0, 200.0, 200.0]))
    busy = write(tmp_path / "busy.json", suite([70.0, 50.0, 60.0], [140.0, 100.0, 120.0]))  # ratios all 0.5
    result = gate(busy, base)
    assert result.passed and result.speed.why == "timed alternately with each model, block by block"
    row = row_of(result, "unet-r10")
    assert (row["baseline"], row["run"], row["change"]) == (0.5, 0.5, 0.0) and row["status"] == "ok"
    assert row_of(gate(busy, base, GatePolicy(absolute_speed=True)), "unet-r10")["status"] == "fail"  # -40 %
    older = write(tmp_path / "older.json", timed(results(record("unet-r10", *same[0]),  # timed before interleaving
                                                         record("fpn-r10", *same[1], ips=200.0)), [100.0] * 3))
    mixed = gate(busy, older)  # the run's side still uses its interleaved ratios, the baseline's the separate timing
    assert mixed.speed.why.startswith("the baseline's fastest model timed in both")
    assert row_of(mixed, "unet-r10")["change"] == pytest.approx(0.0)
    slower = write(tmp_path / "slower.json", suite([49.0, 35.0, 42.0], [140.0, 100.0, 120.0]))  # ratios all 0.35
    row = row_of(gate(slower, base), "unet-r10")
    assert row["status"] == "fail" and row["change"] == pytest.approx(-30.0)
    assert "every typical interleaved ratio of the run below the baseline's" in row["note"]


def test_a_single_model_is_flagged_not_failed(tmp_path, images, record, results):
    base = write(tmp_path / "base.json", results(record("m", *images(20, 0.6), ips=100.0)))
    run = write(tmp_path / "run.json", results(record("m", *images(20, 0.6), ips=50.0)))
    result = gate(run, base)
    assert result.passed and result.speed.mode == "unchecked"
    assert row_of(result, "m")["status"] == "flagged" and "not gated: one model" in row_of(result, "m")["note"]
    assert "raw images/s reported, not gated (one model timed in both" in text(result)
    assert not gate(run, base, GatePolicy(absolute_speed=True)).passed


def test_non_finite_figures_fail_in_the_run_and_are_refused_in_the_baseline(tmp_path, baseline, images, record,
                                                                          results):
    good = json.loads(baseline.read_text())
    broken = json.loads(baseline.read_text())
    broken["models"][1]["metrics"]["mIoU"] = float("nan")
    broken["models"][0]["speed"][0]["images_per_second"] = float("inf")
    run = write(tmp_path / "nan.json", broken)
    result = gate(run, baseline)
    assert result.exit_code == 1
    assert statuses(result)[("fpn-r10", "mIoU")] == "fail" and row_of(result, "fpn-r10", "mIoU")["note"] == \
        "mIoU is nan in the run"
    assert statuses(result)[("unet-r10", "speed")] == "fail" and row_of(result, "unet-r10")["note"] == \
        "images/s is inf in the run"
    assert pd.isna(row_of(result, "fpn-r10", "mIoU")["run"]) and text(result).endswith("FAIL: regression")
    with pytest.raises(UserError, match=r"baseline: model 'unet-r10' has images/s = inf; a baseline must hold fin"):
        gate(write(tmp_path / "good.json", good), run)
    with pytest.raises(UserError, match=r"baseline: model 'fpn-r10' has mIoU = nan; a baseline must hold finite"):
        gate(write(tmp_path / "good.json", good), run, GatePolicy(max_speed_drop_percent=None))
    assert gate(write(tmp_path / "good.json", good), run, GatePolicy(max_speed_drop_percent=None,
                                                                     max_drop_points={"mDice": 0.5})).passed


def test_summaries_are_written(tmp_path, baseline, images, record, results):
    run = write(tmp_path / "run.json", results(record("unet-r10", *images(50, 0.58)),
                                               record("fpn-r10", *images(50, 0.5, seed=1), ips=200.0)))
    result = gate(run, baseline)
    written = write_summary(result, tmp_path / "gate")
    assert [p.name for p in written] == ["gate.md", "gate.json"]
    assert sorted(p.name for p in (tmp_path / "gate").iterdir()) == ["gate.json", "gate.md"]  # no temporary files
    summary = json.loads((tmp_path / "gate" / "gate.json").read_text())
    assert summary["passed"] is False and summary["exit_code"] == 1
    assert summary["settings"]["max_drop_points"] == {"mIoU": 0.5}
    check = next(c for c in summary["checks"] if c["model"] == "unet-r10" and c["check"] == "mIoU")
    assert check["status"] == "fail" and check["unit"] == "pp"
    (bi, bu), (ri, ru) = images(50, 0.6), images(50, 0.58)  # by hand: dataset-level IoU per class, then the mean
    assert check["baseline"] == pytest.approx(100 * np.mean(bi.sum(0) / bu.sum(0)))
    assert check["run"] == pytest.approx(100 * np.mean(ri.sum(0) / ru.sum(0)))
    assert check["change"] == pytest.approx(check["run"] - check["baseline"])
    markdown = (tmp_path / "gate" / "gate.md").read_text()
    assert markdown.startswith("### segbench gate: **FAIL**")
    line = next(line for line in markdown.splitlines() if line.startswith("| unet-r10 | mIoU"))
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[:3] == ["unet-r10", "mIoU", f"{check['baseline']:.2f}"]
    assert cells[4] == f"{check['change']:+.2f} pp" and cells[6] == "-0.50 pp" and cells[7] == "fail"


def test_update_baseline_copies_the_run_compactly(tmp_path, images, record, results):
    (tmp_path / "out").mkdir()
    data = results(record("m", *images(50, 0.6)))
    run = tmp_path / "out" / "results.json"
    run.write_text(json.dumps(data, indent=2))
    target = update_baseline(tmp_path / "out", tmp_path / "baselines" / "toy.json")
    written = json.loads(target.read_text())
    assert (written["schema_version"], written["kind"]) == (2, "run")  # written as version 2
    assert written["models"][0]["per_image"] == data["models"][0]["per_image"]
    assert written["models"][0]["metrics"] == data["models"][0]["metrics"]
    assert written["suite"] == data["suite"] | {"shard": None}
    assert written["convention"] == data["convention"] | {"void_prediction": None}  # every field, null if unused
    assert written["dataset"] == data["dataset"]
    assert [p.name for p in target.parent.iterdir()] == ["toy.json"]  # no temporary file left behind
    assert '"classes": ["road", "car", "pole"],' in target.read_text()  # innermost arrays on one line
    indented = write_results(tmp_path / "indented.json", parse_results(data))  # the same content, as a run writes it
    assert json.loads(indented.read_text()) == written
    assert target.stat().st_size < 0.6 * indented.stat().st_size
    assert gate(run, target).passed


def test_run_from_mlflow_latest_and_run_id(tmp_path, mlflow_uri, baseline, images, record, results):
    from segbench.config.schema import TrackingConfig
    from segbench.results.tracking import Tracker

    data = results(record("unet-r10", *images(50, 0.58)), record("fpn-r10", *images(50, 0.5, seed=1), ips=200.0))
    tracker = Tracker(TrackingConfig(uri=mlflow_uri), "toy")
    parent = tracker.start("toy-run", tags={"segbench.kind": "run", "segbench.suite": "toy"})
    child = tracker.start("unet-r10", parent=parent)
    tracker.end(child)
    tracker.artifact(parent, write(tmp_path / "results.json", data))
    tracker.end(parent)

    latest = gate("latest", baseline, tracking_uri=mlflow_uri)
    assert latest.run == f"MLflow run {parent}" and latest.exit_code == 1
    assert gate(child, baseline, tracking_uri=mlflow_uri).run == f"MLflow run {child}"
    other = write(tmp_path / "other.json", results(record("unet-r10", *images(5, 0.6)), suite="other"))
    with pytest.raises(UserError, match="no finished run of suite 'other'"):
        gate("latest", other, tracking_uri=mlflow_uri)


class LoadedClock:
    """A fake host clock on a machine whose load changes with every timed block (cycling through ``loads``)."""

    def __init__(self, monkeypatch, loads: list[float]) -> None:
        import segbench.deploy.timing as timing

        self.now, self.load, self.loads, self.calls = 0.0, 1.0, loads, 0
        timed_block = timing._timed_block

        def block(*args):
            self.load = self.loads[self.calls % len(self.loads)]
            self.calls += 1
            return timed_block(*args)

        monkeypatch.setattr(timing, "_clock", lambda: self.now)
        monkeypatch.setattr(timing, "_timed_block", block)


class Costly(torch.nn.Module):
    """A forward pass that costs ``seconds`` per image on the fake clock, times the machine's load."""

    def __init__(self, clock: LoadedClock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds, self.conv = clock, seconds, torch.nn.Conv2d(3, 2, 1)

    def forward(self, x):
        self.clock.now += self.seconds * x.shape[0] * self.clock.load
        return self.conv(x)


COSTS = {"unet-r10": 0.02, "fpn-r10": 0.015, "psp-r10": 0.006}  # seconds per image on an idle machine


@pytest.fixture
def timed_suite(monkeypatch, images, record, results):
    """``timed_suite(loads, slower, machine)``: results.json data of three models timed through the timing code
    (psp-r10, the cheapest, alternately with the others), unet-r10's forward ``slower`` times as costly, every
    forward ``machine`` times as costly (or each model's as ``machine[name]`` says), the load changing block by
    block as ``loads`` says."""
    from segbench.deploy.timing import Reference, TimingPlan, measure_throughput

    def make(loads: list[float], slower: float = 1.0, machine: float | dict[str, float] = 1.0) -> dict:
        clock = LoadedClock(monkeypatch, loads)
        factor = machine if isinstance(machine, dict) else dict.fromkeys(COSTS, machine)
        records = []
        for i, (name, cost) in enumerate(COSTS.items()):
            model = Costly(clock, cost * factor[name] * (slower if name == "unet-r10" else 1.0))
            reference = None if name == "psp-r10" else Reference("psp-r10",
                                                                Costly(clock, COSTS["psp-r10"] * factor["psp-r10"]))
            speed = measure_throughput(model, (1, 3, 8, 8), torch.device("cpu"),
                                       TimingPlan(warmup=1, iters=4, repeats=3), reference)
            records.append(record(name, *images(20, 0.6, seed=i)) | {"speed": [speed.model_dump()]})
        return results(*records)

    return make


# The load of each timed block on a busy machine: the model's block and the reference's after it rarely agree.
QUIET = [1.0, 1.04, 1.0, 0.97, 1.02, 1.0]
BUSY = [1.6, 1.5, 1.0, 1.1, 1.35, 1.25, 1.9, 1.8]


def test_the_default_gate_tells_a_slower_model_from_a_busier_machine(tmp_path, timed_suite):
    baseline = write(tmp_path / "base.json", timed_suite(QUIET))
    rerun = gate(write(tmp_path / "rerun.json", timed_suite(BUSY)), baseline)
    assert rerun.passed, text(rerun)  # the same code on a machine busier in some blocks than in others
    assert (rerun.speed.reference, rerun.speed.why) == ("psp-r10", "timed alternately with each model, block by block")
    assert abs(row_of(rerun, "unet-r10")["change"]) < 10
    assert not gate(write(tmp_path / "rerun.json", timed_suite(BUSY)), baseline,
                    GatePolicy(absolute_speed=True)).passed  # raw images/s: the busy machine reads as a regression
    machine = gate(write(tmp_path / "machine.json", timed_suite(QUIET, machine=1.7)), baseline)
    assert machine.passed and abs(row_of(machine, "fpn-r10")["change"]) < 5  # every model 1.7x slower
    for slower in (1 / 0.7, 1.3):  # 30 % fewer images/s, or each forward 30 % longer (23 % fewer images/s)
        result = gate(write(tmp_path / "slower.json", timed_suite(BUSY, slower=slower)), baseline)
        row = row_of(result, "unet-r10")
        assert not result.passed and row["status"] == "fail", text(result)
        assert row["change"] == pytest.approx(100 * (1 / slower - 1), abs=8)
        assert statuses(result)[("fpn-r10", "speed")] == "ok"


def test_the_cli_defaults_name_the_comparison_and_fail_on_nan(cli, tmp_path, baseline):
    code, out, err = cli("gate", str(baseline), str(baseline))
    assert code == 0, err
    assert "speed: images/s as a ratio to fpn-r10's in the same run (the baseline's fastest model timed in both" \
        in out and out.rstrip().endswith("PASS")
    broken = json.loads(baseline.read_text())
    broken["models"][0]["metrics"]["mIoU"] = float("nan")
    nan = write(tmp_path / "nan.json", broken)
    code, out, err = cli("gate", str(nan), str(baseline))
    assert code == 1 and "mIoU is nan in the run" in out and out.rstrip().endswith("FAIL: regression")
    code, out, err = cli("gate", str(baseline), str(nan))
    assert code == 2 and out == ""
    assert err.strip() == ("segbench: error: baseline: model 'unet-r10' has mIoU = nan; a baseline must hold finite "
                           "numbers (update it from a good run with `segbench baseline update`)")


def test_baseline_update_latest_creates_a_new_baseline(cli, tmp_path, mlflow_uri, images, record, results):
    from segbench.config.schema import TrackingConfig
    from segbench.results.tracking import Tracker

    data = results(record("unet-r10", *images(20, 0.6)))
    tracker = Tracker(TrackingConfig(uri=mlflow_uri), "toy")
    parent = tracker.start("toy-run", tags={"segbench.kind": "run", "segbench.suite": "toy"})
    tracker.artifact(parent, write(tmp_path / "results.json", data))
    tracker.end(parent)
    target = tmp_path / "baselines" / "new.json"
    code, out, err = cli("baseline", "update", "latest", str(target), "--tracking-uri", mlflow_uri)
    assert code == 0, err
    written = json.loads(target.read_text())
    assert written["suite"]["name"] == "toy" and written["models"][0]["metrics"] == data["models"][0]["metrics"]
    code, out, err = cli("baseline", "update", "latest", str(target), "--tracking-uri", mlflow_uri)  # now: its suite
    assert code == 0 and json.loads(target.read_text()) == written


def test_a_machine_that_slows_models_unequally_moves_them_together_and_passes(tmp_path, timed_suite):
    """Measured on this project's 2-core machine (benches/gate_noise.py): a core kept busy by another process moved
    U-Net's and FPN's ratios to PSPNet by -12 % to -36 %, together (PSPNet, the smallest, ran up to 1.7x faster).
    A regression moves one model."""
    baseline = write(tmp_path / "base.json", timed_suite(QUIET))
    unequal = {"psp-r10": 1.0, "unet-r10": 1.4, "fpn-r10": 1.45}  # ratios to psp-r10 fall by 29 % and 31 %
    result = gate(write(tmp_path / "busy.json", timed_suite(BUSY, machine=unequal)), baseline)
    assert result.passed, text(result)
    row = row_of(result, "unet-r10")
    assert row["status"] == "noise" and row["change"] == pytest.approx(100 * (1 / 1.4 - 1), abs=5)
    assert "the other models moved with it (median" in row["note"] and "the reference moved" in row["note"]
    slowed = gate(write(tmp_path / "slowed.json", timed_suite(BUSY, slower=1 / 0.7, machine=unequal)), baseline)
    row = row_of(slowed, "unet-r10")  # the same machine, and unet 30 % slower as well: it stands out
    assert not slowed.passed and row["status"] == "fail", text(slowed)
    assert row["change"] == pytest.approx(100 * (0.7 / 1.4 - 1), abs=5)
    alone = re.search(r"and ([-+0-9.]+)% against the other models \(median ([-+0-9.]+)%\)", row["note"])
    assert float(alone[1]) == pytest.approx(100 * ((0.7 / 1.4) * 1.45 - 1), abs=5)  # unet's ratio against fpn's
    assert float(alone[2]) == pytest.approx(100 * (1 / 1.45 - 1), abs=5)
    assert statuses(slowed)[("fpn-r10", "speed")] == "noise"
    assert not gate(write(tmp_path / "busy.json", timed_suite(BUSY, machine=unequal)), baseline,
                    GatePolicy(absolute_speed=True)).passed  # asked for: raw images/s, no suite


def test_timings_on_other_threads_or_hardware_are_reported_not_gated(cli, tmp_path, images, record, results):
    same = images(50, 0.6), images(50, 0.5, seed=1)

    def suite(unet: float, threads: int, hardware: str = "cpu-A") -> Path:
        data = results(record("unet-r10", *same[0], ips=unet), record("fpn-r10", *same[1], ips=200.0),
                       hardware=hardware)
        data["environment"]["threads"] = threads
        return write(tmp_path / f"{unet}-{threads}-{hardware}.json", data)

    baseline = suite(100.0, threads=2)
    fewer = gate(suite(50.0, threads=1), baseline)
    assert fewer.passed and fewer.speed.mode == "unchecked"
    assert fewer.speed.why.startswith("timed on 1 thread, the baseline on 2 threads: models scale differently")
    assert row_of(fewer, "unet-r10")["status"] == "flagged"
    other = gate(suite(50.0, threads=2, hardware="cpu-B"), baseline)
    assert other.passed and other.speed.why.startswith("timed on cpu-B, the baseline on cpu-A")
    forced = gate(suite(50.0, threads=1), baseline, GatePolicy(reference_model="fpn-r10"))
    assert not forced.passed and row_of(forced, "unet-r10")["change"] == pytest.approx(-50.0)
    assert forced.speed.why == "named with --reference-model; timed on 1 thread, the baseline on 2 threads"
    code, out, err = cli("gate", str(suite(50.0, threads=1)), str(baseline))  # as a user types it
    assert code == 0 and "raw images/s reported, not gated (timed on 1 thread, the baseline on 2 threads" in out
    assert "flagged" in out and out.rstrip().endswith("PASS"), out
    code, out, err = cli("gate", str(suite(50.0, threads=1)), str(baseline), "--absolute-speed")
    assert code == 1 and "(asked for with --absolute-speed; timed on 1 thread, the baseline on 2 threads)" in out
    assert not gate(suite(50.0, threads=2), baseline).passed  # the same setup: gated as a ratio
