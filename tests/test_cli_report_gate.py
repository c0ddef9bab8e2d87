"""`segbench report`, `segbench gate` and `segbench baseline update` through the real console entry point."""

import json
from pathlib import Path

import pytest

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
    code, out, err = cli("gate", str(BASELINE), str(BASELINE), "--max-speed-drop", "100", "--out", str(tmp_path / "g"))
    assert code == 0, err
    assert out.rstrip().endswith("PASS")
    assert json.loads((tmp_path / "g" / "gate.json").read_text())["passed"] is True

    assert [c["check"] for c in json.loads((tmp_path / "g" / "gate.json").read_text())["checks"]] == ["mIoU"] * 3

    code, out, _ = cli("gate", str(weakened(tmp_path, 2.0)), str(BASELINE), "--max-speed-drop", "100")
    assert code == 1 and "FAIL" in out

    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    code, _, err = cli("gate", str(BASELINE), str(corrupt))
    assert code == 2 and "segbench: error:" in err and err.count("\n") == 1
    code, _, err = cli("gate", str(BASELINE), str(tmp_path / "missing.json"))
    assert code == 2


@pytest.mark.parametrize("content, message", [
    ({"suite": "synthetic", "models": [{}]}, "schema_version: expected 1 or 2, got nothing (missing)"),
    ({"schema_version": 1, "suite": "synthetic", "models": [{}]},
     "suite: expected an object, got the string 'synthetic'"),
    ({"schema_version": 1, "suite": {"name": "synthetic"}, "models": [{}]},
     "models[0].name: expected a string, got nothing (missing)"),
    ({"schema_version": 1, "suite": {"name": "synthetic"}, "models": [{"name": "m", "speed": [{}]}]},
     "models[0].speed[0].images_per_second: expected a number, got nothing (missing)"),
])
def test_wrong_structure_is_one_line_and_exit_2(cli, tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    for args in (("gate", str(bad), str(BASELINE)), ("gate", str(BASELINE), str(bad)), ("report", str(bad)),
                 ("baseline", "update", str(bad), str(tmp_path / "new.json"))):
        code, out, err = cli(*args, *(("--out", str(tmp_path / "r")) if args[0] == "report" else ()))
        assert code == 2, (args, out, err)
        assert err.count("\n") == 1 and err.startswith("segbench: error: ") and f"{bad}: {message}" in err, err
    assert not (tmp_path / "new.json").exists() and not (tmp_path / "r").exists()


def test_baseline_update_writes_the_run_and_the_old_flag_is_gone(cli, tmp_path):
    target = tmp_path / "baseline.json"
    code, out, err = cli("baseline", "update", str(BASELINE), str(target))
    assert code == 0, err
    assert out == f"baseline: {target}\n"
    written, original = json.loads(target.read_text()), json.loads(BASELINE.read_text())
    assert (written["schema_version"], written["kind"]) == (2, "run")
    for new, old in zip(written["models"], original["models"], strict=True):
        assert (new["name"], new["metrics"], new["per_image"]) == (old["name"], old["metrics"], old["per_image"])
    code, out, err = cli("gate", str(BASELINE), str(target), "--max-drop", "mIoU=0")  # v1 run against v2 baseline
    assert code == 0, out + err
    code, _, err = cli("gate", str(BASELINE), str(target), "--update-baseline")
    assert code == 2 and "--update-baseline" in err
    code, _, err = cli("gate", str(BASELINE), str(target), "--no-speed")
    assert code == 2 and "--no-speed" in err


def test_report_writes_markdown_csv_and_html(cli, tmp_path):
    code, out, err = cli("report", str(BASELINE), "--out", str(tmp_path / "reports"))
    assert code == 0, err
    site = tmp_path / "reports"
    names = [m["name"] for m in sorted(json.loads(BASELINE.read_text())["models"], key=lambda m: -m["metrics"]["mIoU"])]
    assert out.split() == ["wrote", str(site / "synthetic" / "leaderboard.md"), "wrote",
                           str(site / "synthetic" / "leaderboard.csv"), "wrote", str(site / "synthetic" / "index.html"),
                           *[w for n in names for w in ("wrote", str(site / f"synthetic/huggingface/{n}/README.md"))],
                           "wrote", str(site / "synthetic" / "metafile.yaml"), "wrote", str(site / "index.html")]
    lines = (site / "synthetic" / "leaderboard.md").read_text().splitlines()
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines if line.startswith("|") and
            line.split("|")[1].strip().isdigit()]
    # The committed baseline's models by hand, best mIoU first, in percent with two decimals.
    models = sorted(json.loads(BASELINE.read_text())["models"], key=lambda m: -m["metrics"]["mIoU"])
    assert [row[:4] for row in rows] == [[str(rank), m["name"], m["backbone"], f"{100 * m['metrics']['mIoU']:.2f}"]
                                         for rank, m in enumerate(models, 1)]
    assert [row[1] for row in rows] == ["unet-resnet10t", "fpn-resnet10t", "pspnet-resnet10t"]
    assert [row[3] for row in rows] == ["91.56", "68.61", "57.55"]


def test_report_without_sources_reads_the_default_store(cli, tmp_path, monkeypatch, mlflow_uri):
    store = Path(mlflow_uri[len("sqlite:///"):]).rename(tmp_path / "migrated.db")  # not yet where segbench looks
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, _, err = cli("report", "--out", "site")
    assert code == 2 and err.count("\n") == 1 and "no MLflow store at sqlite:///mlflow.db" in err
    assert not (tmp_path / "cwd" / "mlflow.db").exists()  # reading did not create a store

    from segbench.config.schema import TrackingConfig
    from segbench.results.schema import parse_results, write_results
    from segbench.results.tracking import Tracker

    store.rename(tmp_path / "cwd" / "mlflow.db")  # an existing store, in the working directory
    tracker = Tracker(TrackingConfig(uri="sqlite:///mlflow.db"), "toy")
    parent = tracker.start("toy-run", tags={"segbench.kind": "run", "segbench.suite": "toy"})
    child = tracker.start("unet-r10", parent=parent, params={"model": "unet-r10"})
    tracker.artifact(parent, write_results(tmp_path / "logged" / "results.json", parse_results({
        "schema_version": 2, "kind": "run", "suite": {"name": "toy"},
        "dataset": {"name": "synthetic", "classes": ["a"]},
        "models": [{"name": "unet-r10", "metrics": {"mIoU": 0.625}, "mlflow_run_id": child}]})))
    tracker.end(child)
    tracker.end(parent)
    failed = tracker.start("toy-run", tags={"segbench.kind": "run", "segbench.suite": "toy"})
    tracker.end(failed, "FAILED")
    code, out, err = cli("report", "--out", "site")
    assert code == 0, err
    markdown = (tmp_path / "cwd" / "site" / "toy" / "leaderboard.md").read_text()
    [row] = [[cell.strip() for cell in line.split("|")[1:-1]] for line in markdown.splitlines()
             if line.startswith("|") and line.split("|")[1].strip() == "1"]
    assert row[1:4] == ["unet-r10", "-", "62.50"] and "| 2 " not in markdown  # the FAILED run is no row
    assert out.splitlines()[-1] == f"note: toy: 1 MLflow run(s) that did not finish left out: {failed} (FAILED)"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    code, _, err = cli("report")
    assert code == 2 and "elsewhere.db" in err and not (tmp_path / "elsewhere.db").exists()


@pytest.mark.slow
def test_report_from_mlflow_and_from_files_of_a_real_run_are_the_same(cli, tmp_path, mlflow_uri):
    """`segbench run` logs its runs; `segbench report` of its folder and of the store give the same tables and
    the same plots (speed, confusion matrices, prediction overlays fetched from the model's MLflow run)."""
    import pandas as pd

    code, _, err = cli("run", "models=[unet-resnet10t,fpn-resnet10t]", "train.iters=2", "train.batch_size=2",
                       "data.train_samples=4", "data.val_samples=4", "data.image_size=64", "eval.batch_size=4",
                       "bench.iters=2", "bench.repeats=1", "bench.warmup=1", "progress=false",
                       "eval.save_predictions=true", "eval.overlays=1", f"tracking.uri={mlflow_uri}",
                       f"output_dir={tmp_path / 'out'}")
    assert code == 0, err
    assert cli("report", str(tmp_path / "out"), "--out", str(tmp_path / "files"))[0] == 0
    code, out, err = cli("report", "--tracking-uri", mlflow_uri, "--out", str(tmp_path / "mlflow"))
    assert code == 0, err
    tables = [pd.read_csv(tmp_path / site / "synthetic" / "leaderboard.csv") for site in ("files", "mlflow")]
    parent = json.loads((tmp_path / "out" / "results.json").read_text())["mlflow"]["parent_run_id"]
    assert set(tables[1]["source"]) == {f"MLflow run {parent}"}
    pd.testing.assert_frame_equal(tables[0].drop(columns="source"), tables[1].drop(columns="source"))
    assert tables[1]["mIoU_low"].notna().all() and tables[1]["gflops_per_image"].notna().all()
    assert tables[1]["hardware"].notna().all() and tables[1]["torch"].notna().all()
    markdown = [(tmp_path / site / "synthetic" / "leaderboard.md").read_text() for site in ("files", "mlflow")]
    assert markdown[0] == markdown[1]
    pages = [(tmp_path / site / "synthetic" / "index.html").read_text() for site in ("files", "mlflow")]
    for page in pages:  # the speed plot and two confusion matrices; one overlay per model
        assert page.count("<svg") == 3 and page.count('<img src="data:image/png;base64,') == 2


def test_a_model_run_twice_is_one_row_the_newer_and_help_and_docs_say_so(cli, tmp_path):
    import os

    import pandas as pd

    for name, mtime in (("old", 1_000), ("new", 2_000)):
        (tmp_path / name).mkdir()
        data = json.loads(BASELINE.read_text())
        if name == "old":
            data["models"][0]["metrics"]["mIoU"] -= 0.01
        (tmp_path / name / "results.json").write_text(json.dumps(data))
        os.utime(tmp_path / name / "results.json", (mtime, mtime))
    code, out, err = cli("report", str(tmp_path / "old"), str(tmp_path / "new"), "--out", str(tmp_path / "site"))
    assert code == 0, err
    csv = pd.read_csv(tmp_path / "site" / "synthetic" / "leaderboard.csv")
    models = json.loads(BASELINE.read_text())["models"]
    assert sorted(csv["model"]) == sorted(m["name"] for m in models)  # one row per model
    assert set(csv["source"]) == {str(tmp_path / "new" / "results.json")}
    left_out = pd.read_csv(tmp_path / "site" / "synthetic" / "left_out.csv")
    assert set(left_out["source"]) == {str(tmp_path / "old" / "results.json")} and len(left_out) == len(models)
    notes = [line for line in out.splitlines() if line.startswith("note: synthetic: ")]
    assert len(notes) == len(models) and all(str(tmp_path / "old" / "results.json") in n for n in notes)
    older = f"{100 * (models[0]['metrics']['mIoU'] - 0.01):.2f} %"
    assert any(n.startswith(f"note: synthetic: {models[0]['name']}: an older run") and older in n for n in notes)
    # the one rule, said alike by the command's help and the documentation
    code, help_text, _ = cli("report", "--help")
    assert code == 0
    flat = " ".join(help_text.replace("│", " ").split())
    assert "Per model, settings and hardware the newest run is a row; older runs" in flat
    docs = " ".join((Path(__file__).resolve().parent.parent / "docs" / "reports.md").read_text().split())
    assert "the newest result per model, settings and hardware is a row" in docs
    assert "every finished run a row" not in flat + docs


def test_the_publish_workflow_builds_the_site_with_its_own_command(cli, tmp_path, monkeypatch):
    import shlex

    import yaml

    workflow = yaml.safe_load((Path(__file__).resolve().parent.parent / "examples" / "publish_leaderboard.yml")
                              .read_text())
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    [command] = [step["run"] for step in steps if "segbench report" in step.get("run", "")]
    [upload] = [step["with"]["path"] for step in steps if "upload-pages-artifact" in step.get("uses", "")]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "synthetic").mkdir(parents=True)
    (tmp_path / "results" / "synthetic" / "results.json").write_text(BASELINE.read_text())
    code, out, err = cli(*shlex.split(command)[1:])
    assert code == 0, err
    site = tmp_path / upload
    assert (site / "index.html").is_file() and (site / "synthetic" / "index.html").is_file()
    assert (site / "synthetic" / "metafile.yaml").is_file() and list((site / "synthetic" / "huggingface").iterdir())
