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
    written = build_report([tmp_path / "runs"], tmp_path / "site")
    assert sorted(p.relative_to(tmp_path / "site").as_posix() for p in written) == [
        "index.html", "toy/index.html", "toy/leaderboard.csv", "toy/leaderboard.md"]

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


def test_newest_result_per_model_and_hardware_is_kept(tmp_path, suite):
    save(tmp_path / "old", suite(("unet-r10", 0.5, 100.0)), mtime=1_000)
    save(tmp_path / "new", suite(("unet-r10", 0.6, 100.0)), mtime=2_000)
    save(tmp_path / "gpu", suite(("unet-r10", 0.55, 900.0), hardware="gpu-B"), mtime=1_500)
    build_report([tmp_path], tmp_path / "site")
    csv = pd.read_csv(tmp_path / "site" / "toy" / "leaderboard.csv")
    assert list(zip(csv["hardware"], csv["mIoU"].round(2))) == [("cpu-A", 0.6), ("gpu-B", 0.55)]
    assert str(tmp_path / "new" / "results.json") in set(csv["source"])
    page = (tmp_path / "site" / "toy" / "index.html").read_text()
    heat = re.search(r'<table id="T_heat".*?</table>', page, re.S).group(0)  # heatmap rows told apart
    assert re.findall(r'<th id="T_heat_level0_row\d+"[^>]*>(.*?)</th>', heat) == ["unet-r10 @cpu-A", "unet-r10 @gpu-B"]


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


def test_report_from_mlflow_runs(tmp_path, mlflow_uri):
    from segbench.config.schema import TrackingConfig
    from segbench.results.tracking import Tracker

    tracker = Tracker(TrackingConfig(uri=mlflow_uri), "toy")
    parent = tracker.start("toy-run", params={"data.ignore_index": 255, "eval.mode": "whole"},
                           tags={"segbench.kind": "run", "segbench.suite": "toy", "segbench.suite_hash": "h1",
                                 "segbench.hardware": "cpu-A"})
    for name, miou in (("unet-r10", 0.6), ("fpn-r10", 0.7)):
        child = tracker.start(name, parent=parent, params={"model": name, "arch": name[:-4], "backbone": "r10"})
        tracker.log(child, metrics={"mIoU": miou, "mDice": miou + 0.1, "aAcc": 0.9, "images_per_second": 120.0,
                                    "IoU.road": 0.9, "IoU.car": miou}, params={"params": 2_000_000})
        tracker.end(child)
    tracker.end(parent)

    build_report([], tmp_path / "site", tracking_uri=mlflow_uri)
    csv = pd.read_csv(tmp_path / "site" / "toy" / "leaderboard.csv")
    assert list(csv["model"]) == ["fpn-r10", "unet-r10"]
    assert list(csv["mIoU"]) == [0.7, 0.6] and list(csv["IoU.car"]) == [0.7, 0.6]
    assert set(csv["config_hash"]) == {"h1"} and set(csv["hardware"]) == {"cpu-A"} and set(csv["params"]) == {2e6}
    assert csv["mIoU_low"].isna().all()  # MLflow holds no per-image data: no interval


def chromium(*args: str, profile) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=60, check=True)  # an alert() would hang it


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium (apt-get install chromium)")
def test_html_renders_in_chromium(tmp_path, suite):
    save(tmp_path / "a", suite(("unet-r10", 0.6, 150.0), ("fpn-r10", 0.7, 300.0), (EVIL, 0.5, 600.0)))
    build_report([tmp_path / "a"], tmp_path / "site")
    url = (tmp_path / "site" / "toy" / "index.html").as_uri()

    dom = chromium("--dump-dom", url + "#sort=model:asc", profile=tmp_path / "profile").stdout
    table = re.search(r'<table class="sortable" id="leaderboard"[^>]*>.*?</table>', dom, re.S).group(0)
    assert 'data-ready="1"' in table  # the script ran
    assert 'data-col="model" data-kind="text" aria-sort="ascending"' in table
    models = re.findall(r"<tr><td title=[^>]*>(.*?)</td>", table)
    assert models == ["&lt;b&gt;x&lt;/b&gt;&lt;script&gt;alert(1)&lt;/script&gt;", "fpn-r10", "unet-r10"]
    assert "<b>x</b>" not in dom and "alert(1)</script>" not in dom

    shot = tmp_path / "page.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,1600", url, profile=tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


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
