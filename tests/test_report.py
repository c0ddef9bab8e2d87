import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from segbench.errors import UserError
from segbench.report.build import build_report
from segbench.report.plots import pareto_front

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EVIL = "<b>x</b><script>alert(1)</script>"


@pytest.fixture
def suite(images, record, results):
    """``suite(*(name, IoU level, images/s), name, hardware)``: a results.json, per-class IoU road 0.9, car 0.5."""

    def make(*specs: tuple[str, float, float], name: str = "toy", hardware: str = "cpu-A") -> dict:
        data = results(*(record(model, *images(40, iou, seed=i), ips=ips) for i, (model, iou, ips) in enumerate(specs)),
                       suite=name, hardware=hardware)
        for model in data["models"]:
            model["speed"][0]["gflops_per_image"] = 1.25
            model["per_class"] = [{"class": "road", "IoU": 0.9}, {"class": "car", "IoU": 0.5},
                                  {"class": "pole", "IoU": None}]
        return data

    return make


def percentile_interval(intersection, union, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """The report's documented interval, by numpy: 95 % percentile bootstrap of mIoU over images, resampled
    by multinomial counts from default_rng(seed); a class with no union in a resample is left out."""
    intersection, union = np.asarray(intersection, float), np.asarray(union, float)
    n = len(intersection)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples)
    i, u = counts @ intersection, counts @ union
    with np.errstate(invalid="ignore"):
        miou = np.nanmean(np.where(u > 0, i / u, np.nan), axis=1)
    low, high = np.percentile(miou, [2.5, 97.5])
    return low, high


def save(path, data: dict, mtime: float | None = None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(data))
    if mtime is not None:
        os.utime(path / "results.json", (mtime, mtime))
    return path / "results.json"


def markdown_rows(path) -> list[list[str]]:
    lines = [line for line in path.read_text().splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


def test_markdown_and_csv_values(tmp_path, suite):
    data = suite(("unet-r10", 0.6, 150.0), ("fpn-r10", 0.7, 300.0), ("psp-r10", 0.5, 600.0))
    save(tmp_path / "runs" / "a", data)
    written = build_report([tmp_path / "runs"], tmp_path / "site").written
    assert sorted(p.relative_to(tmp_path / "site").as_posix() for p in written) == [
        "index.html", *(f"toy/huggingface/{m}/README.md" for m in ("fpn-r10", "psp-r10", "unet-r10")),
        "toy/index.html", "toy/leaderboard.csv", "toy/leaderboard.md", "toy/metafile.yaml"]

    by_name = {m["name"]: m for m in data["models"]}
    rows = markdown_rows(tmp_path / "site" / "toy" / "leaderboard.md")
    assert [row[:3] for row in rows] == [["1", "fpn-r10", "resnet10t"], ["2", "unet-r10", "resnet10t"],
                                         ["3", "psp-r10", "resnet10t"]]
    for row in rows:
        model = by_name[row[1]]
        intersection, union = np.array(model["per_image"]["intersection"]), np.array(model["per_image"]["union"])
        low, high = percentile_interval(intersection, union)
        assert row[3] == f"{100 * np.mean(intersection.sum(0) / union.sum(0)):.2f}"
        assert row[4] == f"[{100 * low:.2f}, {100 * high:.2f}]"
        assert row[5] == f"{100 * model['metrics']['mDice']:.2f}" and row[6] == "90.00"
        assert row[7] == f"{model['speed'][0]['images_per_second']:.1f}"
        assert row[8] == f"{model['speed'][0]['latency_ms_p50']:.2f}"
        assert row[9:] == ["1.00", "1.25", "cpu-A", "hash0"]

    csv = pd.read_csv(tmp_path / "site" / "toy" / "leaderboard.csv").set_index("model")
    assert list(csv.index) == ["fpn-r10", "unet-r10", "psp-r10"]
    for name, model in by_name.items():
        row = csv.loc[name]
        assert row["mIoU"] == pytest.approx(model["metrics"]["mIoU"], abs=1e-12)
        assert (row["mIoU_low"], row["mIoU_high"]) == pytest.approx(
            percentile_interval(model["per_image"]["intersection"], model["per_image"]["union"]), abs=1e-12)
        assert (row["images_per_second"], row["params"], row["gflops_per_image"]) == (
            model["speed"][0]["images_per_second"], 1e6, 1.25)
        assert (row["IoU.road"], row["IoU.car"]) == (0.9, 0.5)
        assert (row["ignore_index"], row["absent_class"], row["eval_mode"]) == (255, "nan_excluded", "whole")
    assert "IoU.pole" not in csv  # absent in every model


def test_the_newest_run_per_model_settings_and_hardware_is_a_row_and_older_ones_are_left_out(tmp_path, suite):
    save(tmp_path / "old", suite(("unet-r10", 0.5, 100.0)), mtime=1_000)
    save(tmp_path / "new", suite(("unet-r10", 0.6, 100.0)), mtime=2_000)
    save(tmp_path / "gpu", suite(("unet-r10", 0.55, 900.0), hardware="gpu-B"), mtime=1_500)
    report = build_report([tmp_path], tmp_path / "site")
    csv = pd.read_csv(tmp_path / "site" / "toy" / "leaderboard.csv")
    assert list(zip(csv["hardware"], csv["mIoU"].round(2))) == [("cpu-A", 0.6), ("gpu-B", 0.55)]
    assert {str(tmp_path / name / "results.json") for name in ("new", "gpu")} == set(csv["source"])
    old = str(tmp_path / "old" / "results.json")
    assert [note for note in report.notes["toy"] if old in note and "unet-r10: an older run" in note]
    left_out = pd.read_csv(tmp_path / "site" / "toy" / "left_out.csv")  # its numbers kept, out of the ranking
    assert list(zip(left_out["source"], left_out["mIoU"].round(2))) == [(old, 0.5)]
    page = (tmp_path / "site" / "toy" / "index.html").read_text()
    assert "Left out" in page and old in page
    assert "Left out" in (tmp_path / "site" / "toy" / "leaderboard.md").read_text()
    heat = re.search(r'<table id="T_heat".*?</table>', page, re.S).group(0)  # heatmap rows told apart
    labels = re.findall(r'<th id="T_heat_level0_row\d+"[^>]*>(.*?)</th>', heat)
    assert len(labels) == len(set(labels)) == 2 and labels[1] == "unet-r10 @gpu-B"


def test_every_suite_gets_a_folder_and_the_index_links_them(tmp_path, suite):
    save(tmp_path / "a", suite(("unet-r10", 0.6, 100.0), name="toy"))
    save(tmp_path / "b", suite(("fpn-r10", 0.7, 100.0), name="../city scapes"))
    build_report([tmp_path / "a" / "results.json", tmp_path / "b"], tmp_path / "site")
    from segbench.core.names import safe_name

    folder = safe_name("../city scapes")  # _city_scapes-HASH: a suite named "_city_scapes" keeps its own folder
    assert folder.startswith("_city_scapes-") and (tmp_path / "site" / folder / "leaderboard.md").is_file()
    index = (tmp_path / "site" / "index.html").read_text()
    assert f'href="{folder}/index.html">../city scapes</a>' in index and 'href="toy/index.html"' in index


def test_strings_from_data_are_escaped(tmp_path, suite):
    data = suite(("unet-r10", 0.6, 100.0), (EVIL, 0.5, 200.0), hardware="<i>cpu</i>")
    data["models"][0]["per_class"][0]["class"] = data["dataset"]["classes"][0] = "<u>road</u>"
    save(tmp_path / "a", data)
    build_report([tmp_path], tmp_path / "site")
    page = (tmp_path / "site" / "toy" / "index.html").read_text()
    assert page.count("<script") == 1  # ours, at the end
    assert "<b>x</b>" not in page and "<i>cpu</i>" not in page and "<u>road</u>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;u&gt;road&lt;/u&gt;" in page
    markdown = (tmp_path / "site" / "toy" / "leaderboard.md").read_text()
    assert "<script>" not in markdown and "&lt;b&gt;x&lt;/b&gt;" in markdown


def test_pareto_front():
    speed = np.array([100.0, 200.0, 150.0, 50.0, 200.0])
    quality = np.array([70.0, 60.0, 60.0, 65.0, 55.0])
    assert pareto_front(speed, quality).tolist() == [True, True, False, False, False]


def test_bad_sources_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        build_report([tmp_path / "nope"], tmp_path / "site")
    with pytest.raises(UserError, match="no results.json under"):
        build_report([tmp_path], tmp_path / "site")
    (tmp_path / "results.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        build_report([tmp_path], tmp_path / "site")


def log_run(uri: str, data: dict, tmp, status: str = "FINISHED") -> str:
    """``data`` logged as segbench's session logs a run: a parent run tagged with the suite, a child run per model
    (its id in the record), results.json as the parent's artifact; the parent ends with ``status``."""
    from segbench.config.schema import TrackingConfig
    from segbench.results.schema import parse_results, write_results
    from segbench.results.tracking import Tracker

    tracker = Tracker(TrackingConfig(uri=uri), data["suite"]["name"])
    parent = tracker.start("run", tags={"segbench.kind": "run", "segbench.suite": data["suite"]["name"]})
    for model in data["models"]:
        model["mlflow_run_id"] = tracker.start(model["name"], parent=parent, params={"model": model["name"]})
    if status == "FINISHED":
        tracker.artifact(parent, write_results(tmp / parent / "results.json", parse_results(data)))
    tracker.end_all(status)
    return parent


def csv_rows(path) -> pd.DataFrame:
    """A leaderboard.csv without its source column (a path, or the MLflow run)."""
    return pd.read_csv(path).drop(columns="source")


@pytest.mark.parametrize("chunk_bytes", [None, 8 * 40 * 7], ids=["counts-at-once", "counts-in-blocks"])
def test_report_from_mlflow_equals_the_report_from_files(tmp_path, mlflow_uri, suite, monkeypatch, chunk_bytes):
    if chunk_bytes:  # the bootstrap's counts drawn 7 resamples at a time: the same intervals
        from segbench.metrics import statistics

        monkeypatch.setattr(statistics, "CHUNK_BYTES", chunk_bytes)
        statistics._seeded_counts.cache_clear()
    old = suite(("unet-r10", 0.5, 15.0), ("fpn-r10", 0.7, 300.0))
    new = suite(("unet-r10", 0.6, 15.0), ("fpn-r10", 0.65, 300.0))
    for model in new["models"]:
        model["confusion_matrix"] = [[8, 2, 0], [1, 9, 0], [0, 0, 0]]
    killed = suite(("psp-r10", 0.9, 100.0))
    for name, data in (("old", old), ("new", new)):
        log_run(mlflow_uri, data, tmp_path / "artifacts")
        save(tmp_path / "runs" / name, data)
    killed_id = log_run(mlflow_uri, killed, tmp_path / "artifacts", status="KILLED")
    os.utime(tmp_path / "runs" / "old" / "results.json", (1_000, 1_000))

    files = build_report([tmp_path / "runs"], tmp_path / "files")
    stored = build_report([], tmp_path / "mlflow", tracking_uri=mlflow_uri)
    from_files, from_mlflow = csv_rows(tmp_path / "files/toy/leaderboard.csv"), csv_rows(
        tmp_path / "mlflow/toy/leaderboard.csv")
    pd.testing.assert_frame_equal(from_files, from_mlflow)
    # the newest finished run's rows (the older run of each model left out), with their intervals from the
    # per-image data, GFLOPs and environment
    assert list(from_mlflow["model"]) == ["fpn-r10", "unet-r10"]
    for model in new["models"]:
        row = from_mlflow.set_index("mlflow_run_id").loc[model["mlflow_run_id"]]
        assert row["mIoU"] == pytest.approx(model["metrics"]["mIoU"], abs=1e-12)
        assert (row["mIoU_low"], row["mIoU_high"]) == pytest.approx(
            percentile_interval(model["per_image"]["intersection"], model["per_image"]["union"]), abs=1e-12)
        assert (row["gflops_per_image"], row["hardware"]) == (1.25, "cpu-A")
    # the same page: two confusion matrices and the speed plot, its interval named in the legend
    pages = [(tmp_path / site / "toy" / "index.html").read_text() for site in ("files", "mlflow")]
    for page in pages:
        assert page.count("<svg") == 3 and "95% CI" in page and "mathdefault" not in page
    # what was left out is said: the older runs, and the KILLED run (MLflow)
    older = sorted(f"{m['name']}: an older run" for m in old["models"])
    assert sorted(n.split(":")[0] for n in files.notes["toy"]) == ["fpn-r10", "unet-r10"]
    assert all(str(tmp_path / "runs" / "old" / "results.json") in note for note in files.notes["toy"])
    assert f"1 MLflow run(s) that did not finish left out: {killed_id} (KILLED)" in stored.notes["toy"]
    mine = sorted(n for n in stored.notes["toy"] if "older run" in n)
    assert [n[:len(o)] for n, o in zip(mine, older)] == older and len(stored.notes["toy"]) == 3
    assert [f"mIoU {100 * m['metrics']['mIoU']:.2f} %" in n for n, m in zip(
        mine, sorted(old["models"], key=lambda m: m["name"]))] == [True, True]
    assert "psp-r10" not in from_mlflow["model"].to_list()
    markdown = (tmp_path / "mlflow/toy/leaderboard.md").read_text()
    assert f"- 1 MLflow run(s) that did not finish left out: {killed_id} (KILLED)" in markdown
    assert f"<li>1 MLflow run(s) that did not finish left out: {killed_id} (KILLED)</li>" in pages[1]


def test_log_scale_ticks_are_plain_numbers(tmp_path, suite):
    save(tmp_path / "a", suite(("unet-r10", 0.6, 3.0), ("fpn-r10", 0.7, 40.0), ("psp-r10", 0.5, 900.0)))
    build_report([tmp_path / "a"], tmp_path / "site")
    page = (tmp_path / "site" / "toy" / "index.html").read_text()
    axis = re.search(r'<g id="matplotlib\.axis_1">.*?</g>\s*<g id="matplotlib\.axis_2">', page, re.S).group(0)
    ticks = re.findall(r"<text[^>]*>([^<]*)</text>", axis)
    assert {"5", "10", "20", "50", "100", "200", "500"} <= set(ticks[:-1]) and "log scale" in ticks[-1]
    assert all(re.fullmatch(r"[125]0*", tick) for tick in ticks[:-1]), ticks  # 1, 2, 5 x 10^k as plain numbers
    assert "mathdefault" not in page and "$" not in "".join(ticks)


def chromium(*args: str, profile) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=60, check=True)  # an alert() would hang it


def site_runs(tmp_path, suite) -> dict:
    """Three suites; in "toy" a full schedule (300 iterations: a model built here, a hub model, a model timed
    under load) and a 5-iteration smoke run whose model scores higher, written later."""
    def run(name, specs, iters, mtime, folder):
        data = suite(*specs, name=name)
        data["suite"]["config"]["train"] = {"enabled": True, "iters": iters}
        data["suite"]["config_hash"] = f"h{iters}"
        return save(tmp_path / "runs" / folder, data, mtime=mtime), data

    _, full = run("toy", [("unet-r10", 0.6, 150.0), ("fpn-r10", 0.7, 300.0), (EVIL, 0.5, 600.0)], 300, 1_000, "full")
    full["models"][1]["backbone"] = "mobilenetv3_small_050"
    full["models"][2].update(backbone=None, origin={"source": "hf", "weights": {"kind": "hub"}})
    full["models"][2]["name"] = "hf:org/" + EVIL
    full["models"][0]["speed"][0].update(spread=0.6, images_per_second_repeats=[100.0, 150.0, 190.0])
    save(tmp_path / "runs" / "full", full, mtime=1_000)
    _, smoke = run("toy", [("unet-r10", 0.95, 150.0)], 5, 2_000, "smoke")
    run("city", [("unet-r10", 0.4, 100.0)], 300, 1_000, "city")
    run("ade", [("fpn-r10", 0.3, 100.0)], 300, 1_000, "ade")
    return {"full": full, "smoke": smoke}


def visible(dom: str) -> list[tuple[str, str]]:
    """(rank, model) of the leaderboard rows not hidden, in order."""
    table = re.search(r'<table class="sortable" id="leaderboard"[^>]*>.*?</table>', dom, re.S).group(0)
    rows = re.findall(r"<tr( [^>]*)>(.*?)</tr>", table, re.S)
    shown = []
    for attributes, cells in rows:
        if "data-settings" in attributes and " hidden" not in attributes:
            texts = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S)]
            shown.append((texts[0], texts[1]))
    return shown


def test_markdown_ranks_within_one_settings_and_names_what_differs(tmp_path, suite):
    site_runs(tmp_path, suite)
    build_report([tmp_path / "runs"], tmp_path / "site")
    markdown = (tmp_path / "site" / "toy" / "leaderboard.md").read_text()
    assert "Settings differ between these runs: train.iters." in markdown
    full, smoke = markdown.split("### train.iters=300 (latest full schedule)")[1].split("### train.iters=5")
    evil = "hf:org/&lt;b&gt;x&lt;/b&gt;&lt;script&gt;alert(1)&lt;/script&gt;"
    assert [row[:2] for row in markdown_rows_of(full)] == [["1", "fpn-r10"], ["2", "unet-r10"], ["3", evil]]
    assert [row[:2] for row in markdown_rows_of(smoke)] == [["1", "unet-r10"]]


def markdown_rows_of(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium (apt-get install chromium)")
def test_the_site_filters_and_ranks_within_one_settings_in_chromium(tmp_path, suite):
    runs = site_runs(tmp_path, suite)
    build_report([tmp_path / "runs"], tmp_path / "site")
    index = chromium("--dump-dom", (tmp_path / "site" / "index.html").as_uri(), profile=tmp_path / "profile").stdout
    for name in ("toy", "city", "ade"):
        assert f'href="{name}/index.html">{name}</a>' in index
    # the index names the best model of the default settings, not the smoke run's
    toy = re.search(r'href="toy/index.html">toy</a></td>.*?</tr>', index, re.S).group(0)
    assert "fpn-r10" in toy and f"{100 * runs['full']['models'][1]['metrics']['mIoU']:.2f}" in toy

    url = (tmp_path / "site" / "toy" / "index.html").as_uri()
    evil = "hf:org/&lt;b&gt;x&lt;/b&gt;&lt;script&gt;alert(1)&lt;/script&gt;"

    def page(fragment: str = "") -> str:
        return chromium("--dump-dom", url + fragment, profile=tmp_path / "profile").stdout

    dom = page()
    assert 'data-ready="1"' in dom and "<b>x</b>" not in dom and "alert(1)</script>" not in dom
    # default: the latest full schedule, ranked by mIoU; the smoke run's higher score is not beside them
    assert visible(dom) == [("1", "fpn-r10"), ("2", "unet-r10"),
                            ("3", evil)]
    assert "train.iters" in re.search(r'<p class="differ-note".*?</p>', dom, re.S).group(0)
    assert re.search(r'<option value="\w+" selected="">train.iters=300', dom)
    assert "3 of 4 rows shown" in dom
    # speed timed under load is flagged in its cell and in the plot
    assert re.search(r'class="n load"[^>]*>150.0 \(under load\)</td>', dom)
    assert re.search(r"<text[^>]*>unet-r10[^<]*\(timed under load\)</text>", dom)
    # every row shows its reproduce command; a hub model links to its page
    assert dom.count("segbench run suite=toy") == 4
    assert 'href="https://huggingface.co/org/&lt;b&gt;x' in dom
    # filters, set through the fragment as a user's link would
    assert visible(page("#q=fpn")) == [("1", "fpn-r10")]
    assert visible(page("#family=resnet")) == [("2", "unet-r10")]
    assert visible(page("#origin=hf")) == [("3", evil)]
    smoke = re.search(r'<option value="(\w+)"[^>]*>train.iters=5', dom).group(1)
    assert visible(page(f"#settings={smoke}")) == [("1", "unet-r10")]
    assert visible(page("#sort=model:asc")) == [("1", "fpn-r10"), ("3", evil), ("2", "unet-r10")]
    # the protocol block
    protocol = re.search(r'<table id="protocol">.*?</table>', dom, re.S).group(0)
    assert "dataset hash" in protocol and "mode" in protocol and "whole" in protocol

    for name, address in (("index.png", (tmp_path / "site" / "index.html").as_uri()), ("page.png", url)):
        shot = tmp_path / name
        chromium(f"--screenshot={shot}", "--window-size=1280,1600", address, profile=tmp_path / "profile")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_identical_images_give_a_point_interval_and_absent_classes_are_left_out(tmp_path, record, results):
    # Every image: road I=60 U=100, car I=30 U=100, pole absent (U=0). mIoU = (0.6 + 0.3) / 2 = 45 %, and
    # every resample of identical images gives the same 45 %.
    intersection, union = np.tile([60, 30, 0], (20, 1)), np.tile([100, 100, 0], (20, 1))
    save(tmp_path / "a", results(record("m-r10", intersection, union)))
    build_report([tmp_path / "a"], tmp_path / "site")
    [row] = markdown_rows(tmp_path / "site" / "toy" / "leaderboard.md")
    assert row[1:5] == ["m-r10", "resnet10t", "45.00", "[45.00, 45.00]"]


def test_page_holds_the_plots_and_the_heatmap_values(tmp_path, suite):
    save(tmp_path / "a", suite(("unet-r10", 0.6, 150.0), ("fpn-r10", 0.7, 300.0)))
    data = json.loads((tmp_path / "a" / "results.json").read_text())
    data["models"][0]["confusion_matrix"] = [[8, 2, 0], [1, 9, 0], [0, 0, 0]]
    (tmp_path / "a" / "results.json").write_text(json.dumps(data))
    build_report([tmp_path / "a"], tmp_path / "site")
    page = (tmp_path / "site" / "toy" / "index.html").read_text()
    assert "<?xml" not in page and page.count("<svg") == 2  # inline: the Pareto plot, one confusion matrix
    heat = re.search(r'<table id="T_heat".*?</table>', page, re.S).group(0)
    cells = re.findall(r'<td id="T_heat_row(\d)_col(\d)"[^>]*>(.*?)</td>', heat)
    assert cells == [("0", "0", "90.0"), ("0", "1", "50.0"), ("1", "0", "90.0"), ("1", "1", "50.0")]


def test_console_says_the_parity_measured_and_no_cpu_peak_memory(capsys, record, results, images):
    from segbench.report.console import leaderboard, print_leaderboard, print_speed_table
    from segbench.results.schema import ModelRecord, parse_results

    data = results(record("unet-r10", *images(8, 0.6)))
    data["models"][0]["evaluation"]["backends"] = [
        {"backend": "eager", "status": "reference"},
        {"backend": "onnxruntime", "difference": {"mIoU": -0.00012}, "prediction_agreement": 0.99951},
        {"backend": "tensorrt", "status": "skipped", "reason": "needs CUDA"}]
    frame = leaderboard(parse_results(data))
    assert frame.loc[0, ["onnxruntime ΔmIoU pts", "onnxruntime agree %", "tensorrt ΔmIoU pts"]].tolist() == [
        "-0.012", "99.95", "skipped"]
    print_leaderboard(frame, "toy")
    assert "-0.012" in capsys.readouterr().out

    cpu = {"images_per_second": 10.0, "peak_memory_mb": 0.0, "memory_measure": "cpu_peak_rss_growth"}
    cuda = {"images_per_second": 90.0, "peak_memory_mb": 123.4, "memory_measure": "cuda_max_allocated"}
    print_speed_table([ModelRecord(name="m-cpu", speed=[cpu]), ModelRecord(name="m-cuda", speed=[cuda])], "speed")
    table = capsys.readouterr().out
    [cpu_row] = [line for line in table.splitlines() if "m-cpu" in line]
    [cuda_row] = [line for line in table.splitlines() if "m-cuda" in line]
    assert [row.split("│")[11].strip() for row in (cpu_row, cuda_row)] == ["-", "123.40"]  # the peak MB column


def test_overlays_carry_a_caption_and_a_legend_of_the_classes_shown(tmp_path):
    import torch
    from PIL import Image

    from segbench.config.schema import DataConfig
    from segbench.data.registry import build_dataset, dataset_info
    from segbench.evaluation.predictions import PredictionWriter

    cfg = DataConfig(image_size=64, val_samples=1)
    dataset, info = build_dataset(cfg, cfg.val_split, 0), dataset_info(cfg)
    image, target = dataset[0]
    prediction = torch.where(target == 255, 0, target).unsqueeze(0)
    prediction[0, :4, :4] = 4  # one class only in the prediction
    writer = PredictionWriter(tmp_path / "unet-r10", dataset, info, overlays=1)
    writer.write(0, image.unsqueeze(0), prediction)
    [path] = writer.overlay_paths
    overlay = np.asarray(Image.open(path).convert("RGB"))
    shown = set(np.unique(prediction).tolist()) | set(np.unique(target[target != 255]).tolist())
    top = next(y for y in range(overlay.shape[0]) if (overlay[y, :128] != 255).all())  # the image starts here
    caption, legend = overlay[:top], overlay[top + 64:]
    assert (caption < 128).any()  # dark text above the image
    values, counts = np.unique(legend.reshape(-1, 3), axis=0, return_counts=True)
    squares = {tuple(v) for v, n in zip(values.tolist(), counts) if n >= 9 * 9}  # a square's inside, not text
    for cls, colour in enumerate(info.palette):  # a colour square per class shown, none for the others
        assert (tuple(colour) in squares) == (cls in shown), info.classes[cls]
