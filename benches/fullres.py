"""What full-resolution evaluation costs beyond the forward pass: ``segbench eval suite=cityscapes`` at 2048x1024.

Writes N Cityscapes-layout val images at 2048x1024 with instance ids (the scenes of ``score_speed.py``), then
evaluates a small model on them (``unet-resnet10t`` from random weights, the suite's 1024x1024 sliding window at
stride 768) in a child process with the passport on and off, in turns, and prints for each: the evaluation's wall
time per image, its forward share, the per-image cost of everything that is not the forward pass, and the child's
peak resident memory (``ru_maxrss``). Also times the Boundary IoU band of one 2048x1024 label map::

    python benches/fullres.py                   # 2 images, one round
    python benches/fullres.py -n 12 --rounds 2 --keep /tmp/cs12

Measure on a quiet machine; the figures are for docs/figures.md, not for a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score_speed import HEIGHT, WIDTH, scene, write_layout  # noqa: E402

MODEL = "unet-resnet10t"


def band_seconds(repeats: int = 5) -> tuple[float, int]:
    """(best seconds of segbench's boundary band on one 2048x1024 scene, its d)."""
    import torch

    from segbench.data.layouts.cityscapes import label_ids
    from segbench.metrics.boundary import band, dilation_pixels

    labels = torch.from_numpy(label_ids(255)(scene(np.random.default_rng(1))[0]))[None]
    d = dilation_pixels(HEIGHT, WIDTH)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        band(labels, d)
        best = min(best, time.perf_counter() - start)
    return best, d


def evaluate(root: Path, out: Path, passport: bool, model: str) -> dict:
    """The evaluation record of one ``segbench eval`` child, with its wall time and peak memory added."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "segbench", "eval", "suite=cityscapes", f"data.root={root}", f"models=[{model}]",
               "tracking.enabled=false", "progress=false", "bench.enabled=false", "data.num_workers=0",
               f"output_dir={out}", f"eval.passport={str(passport).lower()}"]
    start = time.perf_counter()
    child = subprocess.Popen(command, env=os.environ | {"HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if status:
        sys.exit(f"segbench eval failed ({status}):\n{output[-3000:]}")
    record = json.loads((out / "results.json").read_text())["models"][0]["evaluation"]
    return record | {"wall": wall, "peak_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--images", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="times each command is run, in turns")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--keep", type=Path, help="folder for the data (reused if it exists); default: a temp dir")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="fullres_"))
    write_layout(root, args.images)
    (root / "leftImg8bit" / "train").mkdir(exist_ok=True)
    (root / "gtFine" / "train").mkdir(exist_ok=True)
    seconds, d = band_seconds()
    print(f"{args.images} images at {WIDTH}x{HEIGHT} in {root}; {args.model}, slide 1024x1024 stride 768")
    print(f"boundary band of one {WIDTH}x{HEIGHT} map (d = {d}): {seconds * 1000:.0f} ms")
    for round_ in range(1, args.rounds + 1):
        runs = {on: evaluate(root, root / f"out-{on}", on, args.model) for on in (False, True)}
        print(f"round {round_}:")
        for on, r in runs.items():
            per_image = r["seconds"] / r["images"]
            other = r["seconds"] * (1 - r["forward_share"]) / r["images"]
            print(f"  passport {'on ' if on else 'off'}  eval {per_image:6.2f} s/image  forward share "
                  f"{r['forward_share']:.3f}  not forward {other:5.2f} s/image  peak RSS {r['peak_mb']:.0f} MB  "
                  f"(process {r['wall']:.1f} s)")
        on, off = runs[True], runs[False]
        extra = (on["seconds"] * (1 - on["forward_share"]) - off["seconds"] * (1 - off["forward_share"]))
        print(f"  passport adds {(on['seconds'] / off['seconds'] - 1) * 100:+.1f} % to the evaluation time; its "
              f"non-forward time is {extra / on['images']:.2f} s/image, {extra / off['seconds'] * 100:+.1f} % of the "
              f"evaluation without it (the forward pass varies between runs on a busy machine)")


if __name__ == "__main__":
    main()
