"""Does the default `segbench gate` tell noise from a regression on this machine? (issue 25)

Runs the default suite N times in pairs with the one command CI uses (`segbench run tracking.enabled=false
progress=false`), gates the second run of each pair against the first with the gate's defaults, and prints each
pair's verdict, the false failures and the largest speed change seen. Variants of the second run:

    rerun    the same command again: every pair should pass (a failure is a false failure)
    slow     one model's forward made slower (a sleep proportional to its own time, in evaluation mode, so
             timing sees it): every pair should fail on that model
    threads  the whole run on fewer threads (OMP_NUM_THREADS and torch.set_num_threads): a machine-wide
             slowdown of every model, every pair should pass

    python benches/gate_noise.py --pairs 10                 # rerun, slow and threads, 10 pairs each
    python benches/gate_noise.py --pairs 10 --variant rerun
    python benches/gate_noise.py --pairs 1 --extra train.iters=2 --extra data.train_samples=8   # a smoke test

Run it on a quiet machine: it measures (the timings are the point), and each run of the default suite takes a few
minutes on two cores. Nothing is written outside --keep (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = ["run", "tracking.enabled=false", "progress=false"]  # the command of .ci/run
VARIANTS = ("rerun", "slow", "threads")


def child(argv: list[str]) -> None:
    """Inside a run: apply the variant's patch, then hand over to segbench's own entry point."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow-model")
    parser.add_argument("--slowdown", type=float, default=0.3)
    parser.add_argument("--threads", type=int)
    options, rest = parser.parse_known_args(argv)
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    if options.slow_model:
        _slow_down(options.slow_model, options.slowdown)
    from segbench.cli.main import entry

    sys.argv = ["segbench", *rest]
    entry()


def _slow_down(name: str, slowdown: float) -> None:
    """Make ``name``'s architecture ``slowdown`` slower in images/s (images/s x (1 - slowdown)) in evaluation mode:
    after each forward pass, sleep for the fraction of its own time that this takes. Every model of that
    architecture class slows down (in the default suite: one model per class)."""
    import torch

    from segbench.models.registry import build_model

    with torch.device("meta"):
        cls = type(build_model(name, 2))
    forward, extra = cls.forward, 1 / (1 - slowdown) - 1

    def slower(self, *args, **kwargs):
        start = time.perf_counter()
        out = forward(self, *args, **kwargs)
        if not self.training:
            time.sleep((time.perf_counter() - start) * extra)
        return out

    cls.forward = slower


def segbench_run(out: Path, extra: list[str], slow: str | None, slowdown: float, threads: int | None) -> None:
    command = [sys.executable, __file__, "--child"]
    env = dict(os.environ)
    if slow:
        command += ["--slow-model", slow, "--slowdown", str(slowdown)]
    if threads:
        command += ["--threads", str(threads)]
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    subprocess.run([*command, *RUN, *extra, f"output_dir={out}"], env=env, check=True, stdout=subprocess.DEVNULL)


def gate(run: Path, baseline: Path, out: Path) -> dict:
    """The default gate of ``run`` against ``baseline``: its gate.json."""
    code = subprocess.run([sys.executable, "-m", "segbench", "gate", str(run), str(baseline), "--out", str(out)],
                          stdout=subprocess.DEVNULL).returncode
    if code not in (0, 1):
        raise SystemExit(f"segbench gate exited {code} for {run} against {baseline}")
    return json.loads((out / "gate.json").read_text())


def pair(folder: Path, variant: str, args: argparse.Namespace) -> dict:
    segbench_run(folder / "a", args.extra, None, args.slowdown, None)
    segbench_run(folder / "b", args.extra, args.slow_model if variant == "slow" else None, args.slowdown,
                 args.threads if variant == "threads" else None)
    return gate(folder / "b", folder / "a", folder / "gate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--variant", choices=[*VARIANTS, "all"], default="all")
    parser.add_argument("--slow-model", default="unet-resnet10t")
    parser.add_argument("--slowdown", type=float, default=0.3, help="fewer images/s, as a fraction (0.3: 30 %%)")
    parser.add_argument("--threads", type=int, default=1, help="threads of the second run of a 'threads' pair")
    parser.add_argument("--extra", action="append", default=[], help="a suite override added to every run")
    parser.add_argument("--keep", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    variants = VARIANTS if args.variant == "all" else (args.variant,)
    with tempfile.TemporaryDirectory(prefix="gate-noise-") as tmp:
        root = args.keep or Path(tmp)
        for variant in variants:
            wrong, largest, reference = 0, 0.0, set()
            for i in range(args.pairs):
                summary = pair(root / variant / str(i), variant, args)
                speed = [c for c in summary["checks"] if c["check"] == "speed" and c["change"] is not None]
                reference.add(summary["settings"]["speed_reference"])
                changes = {c["model"]: c["change"] for c in speed}
                statuses = {c["model"]: c["status"] for c in speed}
                expected = variant != "slow"  # a slowed model must fail, everything else must pass
                if variant == "slow":
                    ok = statuses.get(args.slow_model) == "fail" and not any(
                        s == "fail" for m, s in statuses.items() if m != args.slow_model)
                else:
                    ok = summary["passed"] == expected
                wrong += not ok
                unslowed = {m: c for m, c in changes.items() if not (variant == "slow" and m == args.slow_model)}
                largest = max([largest, *map(abs, unslowed.values())])
                print(f"{variant} pair {i}: {'PASS' if summary['passed'] else 'FAIL'} "
                      + ", ".join(f"{m} {c:+.1f}% {statuses[m]}" for m, c in changes.items())
                      + ("" if ok else "   <- wrong verdict"), flush=True)
            what = "slowed model not failed (or another failed)" if variant == "slow" else "false failures"
            print(f"{variant}: {wrong} of {args.pairs} pairs with {what}; largest speed change of an unchanged "
                  f"model {largest:.1f}%; reference {', '.join(map(str, sorted(reference, key=str)))}\n", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
