"""How ``segbench report`` scales with the runs: time and peak memory on generated results.json files.

Writes RUNS results.json files of a Cityscapes-sized suite (MODELS models, IMAGES images x CLASSES classes of
per-image intersections and unions each, a confusion matrix, per-class scores, a speed record) through segbench's
own writer (``write_results``), then runs ``segbench report`` on the folder in a child process and prints its wall
time and peak resident memory (the child's ``ru_maxrss``, as ``/usr/bin/time -v`` reports it)::

    python benches/report_scale.py                      # 200 runs x 4 models x 500 images x 19 classes
    python benches/report_scale.py --runs 20 --keep /tmp/runs

Measure on a quiet machine; the figures are for the closing note, not for a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from segbench.metrics.confusion import convention
from segbench.results.schema import SCHEMA_VERSION, write_results

CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
           "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
MODELS = ["pspnet-resnet50", "deeplabv3-resnet50", "deeplabv3plus-resnet50", "unet-resnet50"]
PIXELS = 1024 * 2048  # a Cityscapes image


def model_record(name: str, rng: np.random.Generator, images: int, classes: int) -> dict:
    """A model's record with per-image counts of Cityscapes size and metrics computed from them."""
    union = rng.integers(0, PIXELS // classes, size=(images, classes))
    union[rng.random(union.shape) < 0.3] = 0  # classes absent from an image
    intersection = (union * rng.uniform(0.3, 0.95, size=union.shape)).astype(np.int64)
    confusion = rng.integers(0, 10**7, size=(classes, classes))
    sums_i, sums_u = intersection.sum(0), union.sum(0)
    iou = np.where(sums_u > 0, sums_i / np.maximum(sums_u, 1), np.nan)
    arch, backbone = name.split("-", 1)
    ips = float(rng.uniform(5, 500))
    return {
        "name": name, "arch": arch, "backbone": backbone, "params": int(rng.integers(10**7, 10**8)),
        "metrics": {"mIoU": float(np.nanmean(iou)), "mDice": float(np.nanmean(2 * iou / (1 + iou))),
                    "aAcc": float(rng.uniform(0.8, 0.97))},
        "per_class": [{"class": c, "IoU": float(v), "support": int(s)} for c, v, s in zip(CLASSES, iou, sums_u)],
        "evaluation": {"mode": "whole", "split": "val", "images": images},
        "confusion_matrix": confusion.tolist(),
        "per_image": {"intersection": intersection.tolist(), "union": union.tolist()},
        "speed": [{"images_per_second": ips, "batch_size": 1, "input_shape": [1, 3, 1024, 2048],
                   "latency_ms_p50": 1000 / ips, "gflops_per_image": 300.0, "precision": "fp32",
                   "memory_format": "contiguous", "compile": False}],
    }


def write_runs(root: Path, runs: int, models: int, images: int, classes: int) -> int:
    """RUNS results.json files under ``root`` (one folder each); their total size in bytes."""
    rng = np.random.default_rng(0)
    total = 0
    for run in range(runs):
        data = {
            "schema_version": SCHEMA_VERSION, "kind": "run",
            "suite": {"name": "cityscapes", "config_hash": hashlib.sha256(str(run).encode()).hexdigest()[:12],
                      "config": {"seed": run}},
            "dataset": {"name": "cityscapes", "classes": CLASSES[:classes], "split": "val"},
            "convention": convention(classes, 255, f"cityscapes-{classes}"),
            "environment": {"device": "cuda:0", "device_name": "NVIDIA A100"},
            "models": [model_record(name, rng, images, classes) for name in MODELS[:models]],
        }
        path = write_results(root / f"run{run:04d}" / "results.json", data)
        total += path.stat().st_size
    return total


def time_report(sources: Path, out: Path) -> tuple[float, float, int]:
    """Seconds, peak RSS in MB and exit code of ``segbench report SOURCES --out OUT`` in a child process."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "segbench", "report", str(sources), "--out", str(out)],
                             stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    return seconds, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)  # ru_maxrss: KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--models", type=int, default=4, help=f"models per run (at most {len(MODELS)})")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--classes", type=int, default=19, help=f"at most {len(CLASSES)}")
    parser.add_argument("--keep", type=Path, help="write the runs and the report here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        start = time.perf_counter()
        size = write_runs(root / "runs", args.runs, args.models, args.images, args.classes)
        written = time.perf_counter() - start
        seconds, peak_mb, code = time_report(root / "runs", root / "report")
    print(json.dumps({"runs": args.runs, "models_per_run": args.models, "images": args.images,
                      "classes": args.classes, "results_mb": round(size / 2**20, 1),
                      "write_seconds": round(written, 1), "report_exit_code": code,
                      "report_seconds": round(seconds, 2), "report_peak_rss_mb": round(peak_mb, 1)}))
    sys.exit(code)


if __name__ == "__main__":
    main()
