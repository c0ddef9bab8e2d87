import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from test_gate import images, record, results  # the results.json builders the gate tests use

from segbench.errors import UserError
from segbench.report import build_report, pareto_front
from segbench.stats import bootstrap

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EVIL = "<b>x</b><script>alert(1)</script>"


def suite(*specs: tuple[str, float, float], name: str = "toy", hardware: str = "cpu-A") -> dict:
    """A results.json with one model per (name, IoU level, images/s) and per-class IoU road 0.9, car 0.5."""
    data = results(*(record(model, *images(40, iou, seed=i), ips=ips) for i, (model, iou, ips) in enumerate(specs)),
                   suite=name, hardware=hardware)
    for model in data["models"]:
        model["speed"][0]["gflops_per_image"] = 1.25
        model["per_class"] = [{"class": "road", "IoU": 0.9}, {"class": "car", "IoU": 0.5},
                              {"class": "pole", "IoU": None}]
    return data


def save(path, data: dict, mtime: float | None = None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(data))
    if mtime is not None:
        os.utime(path / "results.json", (mtime, mtime))
    return path / "results.json"


def markdown_rows(path) -> list[list[str]]:
    lines = [line for line in path.read_text().splitlines() if re.match(r"\| \d+ \|", line)]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


def test_markdown_and_csv_values(tmp_path):
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
        interval = bootstrap(model["per_image"]["intersection"], model["per_image"]["union"])
        assert row[3] == f"{100 * model['metrics']['mIoU']:.2f}"
        assert row[4] == f"[{100 * interval.low:.2f}, {100 * interval.high:.2f}]"
        assert row[5] == f"{100 * model['metrics']['mDice']:.2f}" and row[6] == "90.00"
        assert row[7] == f"{model['speed'][0]['images_per_second']:.1f}"
        assert row[8] == f"{model['speed'][0]['latency_ms_p50']:.2f}"
        assert row[9:] == ["1.00", "1.25", "cpu-A", "hash0"]

    csv = pd.read_csv(tmp_path / "site" / "toy" / "leaderboard.csv").set_index("model")
    assert list(csv.index) == ["fpn-r10", "unet-r10", "psp-r10"]
    for name, model in by_name.items():
        row = csv.loc[name]
        assert row["mIoU"] == pytest.approx(model["metrics"]["mIoU"], abs=1e-12)
        assert row["mIoU_low"] <= row["mIoU"] <= row["mIoU_high"]
        assert (row["images_per_second"], row["params"], row["gflops_per_image"]) == (
            model["speed"][0]["images_per_second"], 1e6, 1.25)
        assert (row["IoU.road"], row["IoU.car"]) == (0.9, 0.5)
        assert (row["ignore_index"], row["absent_class"], row["eval_mode"]) == (255, "nan_excluded", "whole")
    assert "IoU.pole" not in csv  # absent in every model


def test_newest_result_per_model_and_hardware_is_kept(tmp_path):
    save(tmp_path / "old", suite(("unet-r10", 0.5, 100.0)), mtime=1_000)
    save(tmp_path / "new", suite(("unet-r10", 0.6, 100.0)), mtime=2_000)
    save(tmp_path / "gpu", suite(("unet-r10", 0.55, 900.0), hardware="gpu-B"), mtime=1_500)
    build_report([tmp_path], tmp_path / "site")
    csv = pd.read_csv(tmp_path / "site" / "toy" / "leaderboard.csv")
    assert list(zip(csv["hardware"], csv["mIoU"].round(2))) == [("cpu-A", 0.6), ("gpu-B", 0.55)]
    assert str(tmp_path / "new" / "results.json") in set(csv["source"])
    page = (tmp_path / "site" / "toy" / "index.html").read_text()
    assert "<td>unet-r10 @cpu-A</td>" in page and "<td>unet-r10 @gpu-B</td>" in page  # heatmap rows told apart


def test_every_suite_gets_a_folder_and_the_index_links_them(tmp_path):
    save(tmp_path / "a", suite(("unet-r10", 0.6, 100.0), name="toy"))
    save(tmp_path / "b", suite(("fpn-r10", 0.7, 100.0), name="../city scapes"))
    build_report([tmp_path / "a" / "results.json", tmp_path / "b"], tmp_path / "site")
    assert (tmp_path / "site" / "city_scapes" / "leaderboard.md").is_file()
    index = (tmp_path / "site" / "index.html").read_text()
    assert 'href="city_scapes/index.html">../city scapes</a>' in index and 'href="toy/index.html"' in index


def test_strings_from_data_are_escaped(tmp_path):
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
    from segbench.config import TrackingConfig
    from segbench.tracking import Tracker

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
def test_html_renders_in_chromium(tmp_path):
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
