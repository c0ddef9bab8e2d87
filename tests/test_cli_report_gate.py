"""`segbench report` and `segbench gate` through the real console entry point."""

import json
from pathlib import Path

BASELINE = Path(__file__).resolve().parent.parent / "baselines" / "synthetic.json"


def weakened(tmp_path: Path, points: float) -> Path:
    """The committed baseline with every model's mIoU lowered by ``points`` percentage points."""
    results = json.loads(BASELINE.read_text())
    for record in results["models"]:
        record["metrics"]["mIoU"] -= points / 100
        record.pop("per_image", None)  # no per-image data: the gate compares the point estimates only
    path = tmp_path / "weakened.json"
    path.write_text(json.dumps(results))
    return path


def test_gate_passes_unchanged_fails_weakened_and_refuses_bad_input(cli, tmp_path):
    code, out, err = cli("gate", str(BASELINE), str(BASELINE), "--no-speed", "--out", str(tmp_path / "g"))
    assert code == 0, err
    assert out.rstrip().endswith("PASS")
    assert json.loads((tmp_path / "g" / "gate.json").read_text())["passed"] is True

    code, out, _ = cli("gate", str(weakened(tmp_path, 2.0)), str(BASELINE), "--no-speed")
    assert code == 1 and "FAIL" in out

    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    code, _, err = cli("gate", str(BASELINE), str(corrupt))
    assert code == 2 and "segbench: error:" in err and err.count("\n") == 1
    code, _, err = cli("gate", str(BASELINE), str(tmp_path / "missing.json"))
    assert code == 2


def test_gate_update_baseline_writes_the_run(cli, tmp_path):
    target = tmp_path / "baseline.json"
    code, out, err = cli("gate", str(BASELINE), str(target), "--update-baseline")
    assert code == 0, err
    assert json.loads(target.read_text())["models"] == json.loads(BASELINE.read_text())["models"]


def test_report_writes_markdown_csv_and_html(cli, tmp_path):
    code, out, err = cli("report", str(BASELINE), "--out", str(tmp_path / "reports"))
    assert code == 0, err
    markdown = (tmp_path / "reports" / "synthetic" / "leaderboard.md").read_text()
    for record in json.loads(BASELINE.read_text())["models"]:
        assert record["name"] in markdown
    assert (tmp_path / "reports" / "index.html").is_file()
