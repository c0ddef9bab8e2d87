"""Is `segbench score` as fast as the official Cityscapes evaluator, passport included? (issue 33)

Writes N full-resolution (2048x1024) Cityscapes-layout val images with label ids and 16-bit instance ids, and label-id
predictions with a share of their pixels changed; then, in one run, times

    official   cityscapesScripts' evaluateImgLists (pixel and instance level), in a fresh process
    off        segbench score suite=cityscapes ... eval.passport=false
    on         segbench score suite=cityscapes ... (the default: the metric passport on)

each --repeats times, alternating, and prints the median wall time of each and the ratios to the official evaluator.
It also checks that the two tools' mIoU and iIoU agree.

    python benches/score_speed.py --images 60            # about 3 minutes on 2 cores
    python benches/score_speed.py --images 500 --repeats 1

Run it on a quiet machine (the timings are the point). Nothing is written outside --keep (default: a temporary
folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEIGHT, WIDTH = 1024, 2048
# label ids of the evaluated classes (road ... bicycle) and a few ignored ones; instance classes get instance ids
LABEL_IDS = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33, 0, 4], np.uint8)
INSTANCE_IDS = {24, 25, 26, 27, 28, 31, 32, 33}

OFFICIAL = """
import json, sys, time
import numpy as np
np.in1d = getattr(np, "in1d", np.isin)  # cityscapesScripts 2.3.0 calls np.in1d, which numpy 2.4 removed
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
preds, gts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
args = official.args
args.evalInstLevelScore, args.quiet, args.JSONOutput = True, True, False
args.exportFile = sys.argv[3]
start = time.perf_counter()
result = official.evaluateImgLists(preds, gts, args)
print(json.dumps({"seconds": time.perf_counter() - start, "mIoU": result["averageScoreClasses"],
                  "iIoU": result["averageScoreInstClasses"]}))
"""


def scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 1024x2048 label-id map of blocky regions (some of them instances) and its instance-id map."""
    coarse = rng.choice(LABEL_IDS, size=(HEIGHT // 64, WIDTH // 64))
    labels = np.kron(coarse, np.ones((64, 64), np.uint8))
    instances = labels.astype(np.uint16)
    for _ in range(40):  # objects: rectangles of an instance class, each its own instance
        label = int(rng.choice(sorted(INSTANCE_IDS)))
        r, c = rng.integers(0, HEIGHT - 200), rng.integers(0, WIDTH - 200)
        h, w = rng.integers(20, 200, 2)
        labels[r:r + h, c:c + w] = label
        instances[r:r + h, c:c + w] = label * 1000 + rng.integers(0, 999)
    return labels, instances


def write_data(root: Path, images: int, changed: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """The val split of ``images`` scenes in frankfurt, and label-id predictions with ``changed`` of the pixels
    replaced by a random label id; the prediction and ground-truth files, in the same order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    image_dir, gt_dir, pred_dir = (root / "leftImg8bit/val/frankfurt", root / "gtFine/val/frankfurt", root / "pred")
    for folder in (image_dir, gt_dir, pred_dir):
        folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    preds, gts = [], []
    for n in range(images):
        name = f"frankfurt_{n:06d}_000019"
        labels, instances = scene(rng)
        pred = labels.copy()
        flip = rng.random(labels.shape) < changed
        pred[flip] = rng.choice(LABEL_IDS, int(flip.sum()))
        rgb.save(image_dir / f"{name}_leftImg8bit.png", compress_level=1)
        Image.fromarray(labels).save(gt_dir / f"{name}_gtFine_labelIds.png")
        Image.fromarray(instances).save(gt_dir / f"{name}_gtFine_instanceIds.png")
        Image.fromarray(pred).save(pred_dir / f"{name}.png")
        preds.append(str(pred_dir / f"{name}.png"))
        gts.append(str(gt_dir / f"{name}_gtFine_labelIds.png"))
    return preds, gts


def time_official(preds: list[str], gts: list[str], work: Path) -> dict:
    """Wall time of the official evaluator in a fresh process (start-up included, as for segbench), its scores."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", OFFICIAL, json.dumps(preds), json.dumps(gts),
                          str(work / "official.json")], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"wall": wall}


def time_segbench(root: Path, work: Path, passport: bool, run: int) -> dict:
    """Wall time of ``segbench score`` on the predictions, passport on or off, and its mIoU and iIoU."""
    out_dir = work / f"score-{'on' if passport else 'off'}-{run}"
    command = ["segbench", "score", "suite=cityscapes", f"data.root={root}", f"pred_dir={root / 'pred'}",
               "label_space=dataset", "tracking.enabled=false", "progress=false", f"output_dir={out_dir}"]
    if not passport:
        command.append("eval.passport=false")
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    metrics = json.loads((out_dir / "results.json").read_text())["models"][0]["metrics"]
    return {"wall": wall, "mIoU": metrics["mIoU"], "iIoU": metrics.get("iIoU")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--changed", type=float, default=0.1, help="share of prediction pixels changed")
    parser.add_argument("--keep", type=Path, help="keep the data and results here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="score-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "cityscapes"
    start = time.perf_counter()
    preds, gts = write_data(root, args.images, args.changed)
    print(f"{args.images} images of {WIDTH}x{HEIGHT} written in {time.perf_counter() - start:.0f} s to {root}")
    walls: dict[str, list[float]] = {"official": [], "off": [], "on": []}
    scores = {}
    for run in range(args.repeats):  # alternating, so that a busier minute touches every command
        scores["official"] = official = time_official(preds, gts, work)
        walls["official"].append(official["wall"])
        for name, passport in (("off", False), ("on", True)):
            scores[name] = result = time_segbench(root, work, passport, run)
            walls[name].append(result["wall"])
    median = {name: statistics.median(values) for name, values in walls.items()}
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.repeats} alternating repeats, median wall time")
    print(f"{'command':<44} {'seconds':>8} {'x official':>10}  runs")
    labels = {"official": "cityscapesScripts evaluateImgLists", "off": "segbench score eval.passport=false",
              "on": "segbench score (passport on, the default)"}
    for name, label in labels.items():
        runs = ", ".join(f"{w:.1f}" for w in walls[name])
        print(f"{label:<44} {median[name]:>8.1f} {median[name] / median['official']:>10.2f}  {runs}")
    print(f"passport's own cost: {(median['on'] - median['off']) / args.images:.3f} s per image")
    print(f"mIoU official {scores['official']['mIoU']!r}, segbench {scores['on']['mIoU']!r}; "
          f"iIoU official {scores['official']['iIoU']!r}, segbench {scores['on']['iIoU']!r}")
    if args.keep:
        (work / "summary.json").write_text(json.dumps({"walls": walls, "scores": scores}, indent=2))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
