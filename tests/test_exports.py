"""`segbench report --export`: the leaderboard in formats other tools read, checked with those tools' readers
(huggingface_hub's ModelCard, PyYAML, pandas) against the results.json of real runs and the leaderboard CSV."""

import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.failure_table import assert_refused

TINY = ["data.val_samples=8", "train.iters=2", "train.batch_size=4", "data.train_samples=8", "eval.batch_size=4",
        "progress=false", "tracking.enabled=false"]


pytestmark = pytest.mark.slow  # every test needs the module's two runs (one fixture, seconds)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cli_for_setup) -> Path:
    """Two runs of the synthetic suite: two models under two corruptions x two severities, timed; one model at two
    scales with flip."""
    tmp = tmp_path_factory.mktemp("exports")

    def _segbench(*args: str, cache: Path) -> None:  # in this process: no interpreter start for a set-up
        code, _, err = cli_for_setup(*args, env={"SEGBENCH_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}, cwd=tmp)
        assert code == 0, err[-3000:]

    _segbench("run", "models=[unet-resnet10t,fpn-resnet10t]", *TINY, "bench.iters=3", "bench.warmup=1",
              "eval.corruptions=[gaussian_noise,contrast]", "eval.severities=[2,4]", f"output_dir={tmp / 'robust'}",
              cache=tmp / "cache")
    _segbench("run", "models=[unet-resnet10t]", *TINY, "bench.enabled=false", "eval.scales=[0.75,1.0]",
              "eval.flip=true", f"output_dir={tmp / 'tta'}", cache=tmp / "cache")
    return tmp


def records(runs: Path) -> dict[tuple[str, str], tuple[dict, dict]]:
    """(model, config hash) -> (results.json, model record), read with json."""
    found = {}
    for name in ("robust", "tta"):
        results = json.loads((runs / name / "results.json").read_text())
        for record in results["models"]:
            found[(record["name"], results["suite"]["config_hash"])] = (results, record)
    return found


@pytest.fixture
def site(cli, runs, tmp_path) -> Path:
    code, out, err = cli("report", str(runs / "robust"), str(runs / "tta"), "--out", str(tmp_path / "site"),
                         "--export", "hf,mmseg,robustbench")
    assert code == 0, err
    return tmp_path / "site" / "synthetic"


def test_model_cards_round_trip_through_huggingface_hub(site, runs):
    from huggingface_hub import ModelCard

    leaderboard = pd.read_csv(site / "leaderboard.csv")
    cards = sorted((site / "huggingface").glob("*/README.md"))
    assert len(cards) == len(leaderboard) == 3
    for _, row in leaderboard.iterrows():
        results, record = records(runs)[(row["model"], row["config_hash"])]
        card = ModelCard.load(site / "huggingface" / f"{row['model']}-{row['config_hash'][:6]}" / "README.md")
        assert card.data.model_name == row["model"]
        evals = {e.metric_name: e for e in card.data.eval_results}
        # the values equal the leaderboard's (percent, two decimals) and results.json's
        assert set(evals) == {"mIoU", "mDice", "aAcc", "mAcc", "fwIoU"}
        assert {name: e.metric_value for name, e in evals.items()} == {
            name: round(100 * record["metrics"][name], 2) for name in evals}
        assert {name: e.metric_value for name, e in evals.items()} == {
            name: round(100 * row[name], 2) for name in evals}
        for e in evals.values():
            assert (e.task_type, e.dataset_name, e.dataset_split) == ("semantic-segmentation", "synthetic", "val")
            assert e.dataset_revision == row["dataset_hash"] == e.metric_args["dataset hash"]
            assert e.metric_args["mode"] == record["evaluation"]["mode"] == "whole"
            assert e.metric_args["flip"] is bool(results["suite"]["config"]["eval"]["flip"])
            assert e.metric_args["segbench version"] == results["environment"]["segbench"]
            assert e.metric_args["reproduce"] == row["reproduce"]


def test_the_reproduce_command_gives_the_runs_settings(site, runs):
    from segbench.config.schema import config_hash, read_config

    for (model, digest), (results, _) in records(runs).items():
        card = yaml.safe_load((site / "huggingface" / f"{model}-{digest[:6]}" / "README.md").read_text()
                              .split("---")[1])
        command = shlex.split(card["model-index"][0]["results"][0]["metrics"][0]["args"]["reproduce"])
        assert command[:3] == ["segbench", "run", "suite=synthetic"] and command[3] == f"models=[{model}]"
        models = ",".join(m["name"] for m in results["models"])  # the run's models, for the same hash
        assert config_hash(read_config(command[2:] + [f"models=[{models}]"])) == digest


def test_the_metafile_parses_and_has_mmsegmentations_fields(site, runs):
    metafile = yaml.safe_load((site / "metafile.yaml").read_text())
    assert {c["Name"] for c in metafile["Collections"]} == {"unet", "fpn"}
    by_name = {m["Name"]: m for m in metafile["Models"]}
    assert len(by_name) == 3
    for (model, digest), (results, record) in records(runs).items():
        entry = by_name[f"{model}-{digest[:6]}"]
        assert entry["In Collection"] == record["arch"]
        [result] = entry["Results"]
        assert (result["Task"], result["Dataset"]) == ("Semantic Segmentation", "synthetic")
        flip = results["suite"]["config"]["eval"]["flip"]
        key = "mIoU(ms+flip)" if flip else "mIoU"
        assert result["Metrics"] == {key: round(100 * record["metrics"]["mIoU"], 2)}
        assert entry["Config"].startswith(f"segbench run suite=synthetic 'models=[{model}]'")
        assert entry["Weights"] == record["checkpoint"]["path"]
        metadata = entry["Metadata"]
        assert (metadata["backbone"], metadata["lr schd"]) == ("resnet10t", 2)
        assert "crop size" in metadata and "inference memory (MB)" in metadata
        [timing] = metadata["inference time (ms/im)"]
        speed = record["speed"][0] if record["speed"] else None
        if speed:
            assert timing["value"] == round(speed["latency_ms_p50"] / speed["batch_size"], 3)
            assert timing["batch size"] == speed["batch_size"] and timing["hardware"] == results["environment"][
                "device_name"]
        else:
            assert timing["value"] is None
        assert "dataset hash: " in entry["Notes"] and f"config hash: {digest}" in entry["Notes"]
        assert f"scales: {'0.75,1' if flip else '1'}" in entry["Notes"]


def test_robustbench_files_and_the_csv_mean_is_mpc(site, runs):
    table = pd.read_csv(site / "robustbench" / "unaggregated_results.csv")
    robust = {key: value for key, value in records(runs).items() if value[1].get("robustness")}
    assert len(robust) == 2 and len(table) == 2 * 4
    leaderboard = pd.read_csv(site / "leaderboard.csv")
    for (model, digest), (_, record) in robust.items():
        name = f"{model}-{digest[:6]}"
        cells = table[table["model"] == name]
        assert sorted(zip(cells["corruption"], cells["severity"])) == [
            ("contrast", 2), ("contrast", 4), ("gaussian_noise", 2), ("gaussian_noise", 4)]
        # each cell from results.json, and their plain mean is mPC
        assert cells["mIoU"].mean() == pytest.approx(record["robustness"]["mPC"], abs=1e-12)
        assert cells["mIoU"].mean() == pytest.approx(record["metrics"]["mPC"], abs=1e-12)
        by_hand = np.mean([c["metrics"]["mIoU"] for c in record["robustness"]["conditions"]])
        assert cells["mIoU"].mean() == pytest.approx(by_hand, abs=1e-12)
        info = json.loads((site / "robustbench" / f"{name}.json").read_text())
        clean = leaderboard.set_index(["model", "config_hash"]).loc[(model, digest), "mIoU"]
        assert info["clean_acc"] == f"{100 * clean:.2f}" == f"{100 * record['metrics']['mIoU']:.2f}"
        assert info["corruptions_acc"] == f"{100 * record['robustness']['mPC']:.2f}"
        assert "dataset hash:" in info["footnote"] and "reproduce: segbench run" in info["footnote"]
    assert not (site / "robustbench" / "unet-resnet10t-{}.json".format(
        next(d for (m, d), v in records(runs).items() if not v[1].get("robustness"))[:6])).exists()


def test_export_none_writes_only_the_leaderboard(cli, runs, tmp_path):
    code, out, err = cli("report", str(runs / "tta"), "--out", str(tmp_path / "site"), "--export", "none")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "site" / "synthetic").iterdir()) == [
        "index.html", "leaderboard.csv", "leaderboard.md"]


def test_an_unknown_export_format_is_one_line_and_writes_nothing(cli, runs, tmp_path):
    code, out, err = cli("report", str(runs / "tta"), "--out", str(tmp_path / "site"), "--export", "hf,mmsegg")
    assert_refused(code, out, err, r"--export: unknown format 'mmsegg'; did you mean 'mmseg'\?; expected a "
                                   r"comma-separated list of hf, mmseg, robustbench")
    assert not (tmp_path / "site").exists()


def test_scored_predictions_are_reproduced_by_segbench_score(runs, tmp_path):
    from segbench.report.protocol import reproduce
    from segbench.results.schema import read_results

    data = json.loads((runs / "tta" / "results.json").read_text())
    data["kind"] = "score"
    data["models"][0]["evaluation"]["pred_dir"] = "my preds/unet"
    (tmp_path / "results.json").write_text(json.dumps(data))
    command = shlex.split(reproduce(read_results(tmp_path / "results.json"), data["models"][0]["name"]))
    assert command[:4] == ["segbench", "score", "pred_dir=my preds/unet", "suite=synthetic"]
    assert "eval.flip=true" in command and not any(c.startswith("models=") for c in command)
