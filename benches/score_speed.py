"""``segbench score`` against the official Cityscapes evaluator, on full-resolution Cityscapes-layout images.

Writes N val images at 2048x1024 in the official layout (``leftImg8bit``, ``gtFine`` label ids and instance ids: road,
sidewalk, buildings, sky, vegetation, poles and instances of person, rider, car, truck, bicycle; unlabeled corners)
and label-id predictions with about 10 % of the pixels changed (8x8 blocks set to another id). Then, in one run and
in turns, times three commands, each in a child process from its start to its exit:

- cityscapesScripts' ``evaluateImgLists`` (pixel and instance level), the official evaluator;
- ``segbench score suite=cityscapes ... eval.passport=false``;
- ``segbench score suite=cityscapes ...`` (passport on, the default);

and prints their wall times and CPU times (user + system, every thread), the ratios to the official evaluator and the
mIoU / iIoU each reports::

    python benches/score_speed.py                   # 60 images, one round
    python benches/score_speed.py -n 500 --rounds 2 --keep /tmp/cs500

Measure on a quiet machine; the figures are for docs/figures.md, not for a test. ``python -m segbench`` imports the
package from the current folder first: to time another commit, run this file from a copy of that commit
(``cd COPY && PYTHONPATH=COPY python PATH/TO/benches/score_speed.py --keep /tmp/cs60``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 1024, 2048
CITY = "frankfurt"
# label id, instance label?  (Cityscapes label ids: 7 road, 8 sidewalk, 11 building, 17 pole, 21 vegetation,
# 23 sky, 24 person, 25 rider, 26 car, 27 truck, 33 bicycle; 0 unlabeled, 1 ego vehicle are ignored)
THINGS = (24, 24, 24, 25, 26, 26, 26, 26, 27, 33, 33)
CPU: list[float] = []  # CPU seconds of each timed child process, in order
WRONG = np.array([7, 8, 11, 17, 21, 23, 24, 25, 26, 27, 33, 0], np.uint8)  # what a changed block becomes
OFFICIAL = """
import json, sys, time
import numpy as np
np.in1d = getattr(np, "in1d", np.isin)  # cityscapesScripts 2.3.0 calls np.in1d, which numpy 2.4 removed
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
preds, gts, export = json.loads(sys.argv[1])
args = official.args
args.evalInstLevelScore, args.quiet, args.JSONOutput, args.exportFile = True, True, False, export
start = time.perf_counter()
result = official.evaluateImgLists(preds, gts, args)
print(json.dumps({"seconds": time.perf_counter() - start, "mIoU": result["averageScoreClasses"],
                  "iIoU": result["averageScoreInstClasses"]}))
"""


def scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(label ids, instance ids) of one street-like scene at full resolution."""
    labels = np.empty((HEIGHT, WIDTH), np.uint8)
    horizon = int(rng.integers(380, 520))
    labels[:horizon] = 23  # sky
    labels[horizon:] = 7  # road
    kerb = horizon + int(rng.integers(60, 140))
    labels[horizon:kerb] = 8  # sidewalk
    x = 0
    while x < WIDTH:  # a skyline of buildings and trees
        w, top = int(rng.integers(80, 400)), int(rng.integers(40, horizon - 40))
        labels[top:horizon, x:x + w] = 11 if rng.random() < 0.7 else 21
        x += w
    for _ in range(int(rng.integers(4, 10))):  # poles
        c, top = int(rng.integers(0, WIDTH - 12)), int(rng.integers(100, horizon))
        labels[top:kerb, c:c + int(rng.integers(4, 12))] = 17
    instances = labels.astype(np.uint16)
    counts: dict[int, int] = {}
    for label in rng.choice(THINGS, int(rng.integers(8, 20))):
        h, w = (int(rng.integers(40, 260)), int(rng.integers(20, 120))) if label in (24, 25, 33) else \
            (int(rng.integers(60, 300)), int(rng.integers(100, 500)))
        r, c = int(rng.integers(horizon - 50, HEIGHT - h)), int(rng.integers(0, WIDTH - w))
        labels[r:r + h, c:c + w] = label
        counts[label] = counts.get(label, -1) + 1
        instances[r:r + h, c:c + w] = label * 1000 + counts[label]
    labels[HEIGHT - 60:, :] = 1  # ego vehicle: ignored
    instances[HEIGHT - 60:, :] = 1
    labels[:40, :200] = 0  # unlabeled
    instances[:40, :200] = 0
    return labels, instances


def perturbed(labels: np.ndarray, rng: np.random.Generator, share: float = 0.10, block: int = 8) -> np.ndarray:
    """``labels`` with about ``share`` of its pixels changed, in block x block squares, to another label id."""
    grid = (HEIGHT // block, WIDTH // block)
    changed = rng.random(grid) < share
    values = rng.choice(WRONG, grid)
    big = np.kron(changed, np.ones((block, block), bool))
    return np.where(big, np.kron(values, np.ones((block, block), np.uint8)), labels)


def write_layout(root: Path, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """N val images in the Cityscapes layout under ``root`` and their predictions in ``root/pred``; returns the
    prediction and ground-truth label-id files, in matching order. Files already there are kept."""
    rng = np.random.default_rng(seed)
    gt_dir, img_dir, pred_dir = (root / "gtFine" / "val" / CITY, root / "leftImg8bit" / "val" / CITY, root / "pred")
    for folder in (gt_dir, img_dir, pred_dir):
        folder.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.full((HEIGHT, WIDTH, 3), 90, np.uint8))
    preds, gts = [], []
    for i in range(n):
        name = f"{CITY}_{i:06d}_000019"
        gt, pred = gt_dir / f"{name}_gtFine_labelIds.png", pred_dir / f"{name}.png"
        if not pred.is_file():
            labels, instances = scene(rng)
            Image.fromarray(labels).save(gt)
            Image.fromarray(instances).save(gt_dir / f"{name}_gtFine_instanceIds.png")
            Image.fromarray(perturbed(labels, rng)).save(pred)
            image.save(img_dir / f"{name}_leftImg8bit.png")
        preds.append(str(pred))
        gts.append(str(gt))
    return preds, gts


def timed(command: list[str], env: dict) -> tuple[float, str]:
    """(wall seconds, stdout) of a child process; its CPU seconds (user + system, all threads) go to ``CPU``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if done.returncode:
        sys.exit(f"{' '.join(command[:4])}... failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds, done.stdout


def segbench_score(root: Path, out: Path, env: dict, passport: bool) -> tuple[float, dict]:
    """(wall seconds, metrics) of ``segbench score`` on the predictions under ``root/pred``, written to ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "segbench", "score", "suite=cityscapes", f"data.root={root}",
               f"pred_dir={root / 'pred'}", "label_space=dataset", "tracking.enabled=false", "progress=false",
               f"output_dir={out}", f"eval.passport={str(passport).lower()}"]
    seconds, stdout = timed(command, env)
    return seconds, json.loads((out / "results.json").read_text())["models"][0]["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--images", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=1, help="times each command is run, in turns")
    parser.add_argument("--keep", type=Path, help="folder for the data (reused if it exists); default: a temp dir")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="score_speed_"))
    start = time.perf_counter()
    preds, gts = write_layout(root, args.images)
    print(f"{args.images} images at {WIDTH}x{HEIGHT} in {root} ({time.perf_counter() - start:.1f} s to write)")
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    out = root / "out"
    for round_ in range(1, args.rounds + 1):
        official_s, stdout = timed([sys.executable, "-c", OFFICIAL, json.dumps([preds, gts, str(root / "cs.json")])],
                                   env)
        official = json.loads(stdout.strip().splitlines()[-1])
        off_s, off = segbench_score(root, out, env, passport=False)
        on_s, on = segbench_score(root, out, env, passport=True)
        print(f"round {round_}: {args.images} images")
        official_cpu, off_cpu, on_cpu = CPU[-3:]
        print(f"  official evaluateImgLists   {official_s:7.2f} s  (in the function {official['seconds']:.2f} s)  "
              f"CPU {official_cpu:6.2f} s  mIoU {official['mIoU']:.10f} iIoU {official['iIoU']:.10f}")
        print(f"  segbench score passport off {off_s:7.2f} s  ratio {off_s / official_s:.2f}  "
              f"CPU {off_cpu:6.2f} s  ratio {off_cpu / official_cpu:.2f}  mIoU {off['mIoU']:.10f}")
        print(f"  segbench score passport on  {on_s:7.2f} s  ratio {on_s / official_s:.2f}  "
              f"CPU {on_cpu:6.2f} s  ratio {on_cpu / official_cpu:.2f}  "
              f"mIoU {on['mIoU']:.10f} iIoU {on['iIoU']:.10f} bIoU {on['bIoU']:.6f}")
        print(f"  passport cost {(on_s - off_s) / args.images * 1000:.0f} ms per image")


if __name__ == "__main__":
    main()
