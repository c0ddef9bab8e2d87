"""Does the default `segbench gate` tell noise from a regression on this machine? (issue 25)

Runs the default suite with the one command CI uses (`segbench run tracking.enabled=false progress=false`),
PAIRS + 1 times one after another, then the variants, and gates with the gate's defaults:

    rerun    each plain run against the one before it: every gate should pass (a failure is a false failure)
    slow     one model's forward made slower (a sleep proportional to its own time, in evaluation mode, so timing
             sees it), gated against every plain run: every gate should fail on that model and only on it
    busy     the whole run beside --busy other processes that keep cores busy: a machine-wide load that changes
             every model's speed (not equally), gated against every plain run: every gate should pass
    threads  the whole run on fewer threads (OMP_NUM_THREADS and torch.set_num_threads), gated against every plain
             run: every gate should pass (models scale differently with threads, so the gate does not compare
             speed across thread counts; it reports and flags it)

It prints each gate's verdict, the wrong verdicts and the largest speed change seen; with --keep, summary.json too.

    python benches/gate_noise.py --pairs 10 --variant-runs 2 --keep /tmp/gate-noise   # about 60 min on 2 cores
    python benches/gate_noise.py --pairs 10 --variant-runs 2 --keep /tmp/gate-noise --gate-only   # gate them again
    python benches/gate_noise.py --pairs 1 --variant-runs 1 --extra train.iters=2   # a smoke test

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

    from segbench.models import factory

    with torch.device("meta"):
        cls = type(factory.build(name, 2, "random").module)
    forward, extra = cls.forward, 1 / (1 - slowdown) - 1

    def slower(self, *args, **kwargs):
        start = time.perf_counter()
        out = forward(self, *args, **kwargs)
        if not self.training:
            time.sleep((time.perf_counter() - start) * extra)
        return out

    cls.forward = slower


def segbench_run(out: Path, extra: list[str], slow: str | None = None, slowdown: float = 0.3,
                 threads: int | None = None, busy: int = 0) -> None:
    """One run of the suite; ``busy`` other processes keep that many cores busy for the whole run."""
    command = [sys.executable, __file__, "--child"]
    env = dict(os.environ)
    if slow:
        command += ["--slow-model", slow, "--slowdown", str(slowdown)]
    if threads:
        command += ["--threads", str(threads)]
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        subprocess.run([*command, *RUN, *extra, f"output_dir={out}"], env=env, check=True, stdout=subprocess.DEVNULL)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def gate(run: Path, baseline: Path, out: Path) -> dict:
    """The default gate of ``run`` against ``baseline``: its gate.json."""
    code = subprocess.run([sys.executable, "-m", "segbench", "gate", str(run), str(baseline), "--out", str(out)],
                          stdout=subprocess.DEVNULL).returncode
    if code not in (0, 1):
        raise SystemExit(f"segbench gate exited {code} for {run} against {baseline}")
    return json.loads((out / "gate.json").read_text())


def verdicts(summary: dict) -> tuple[dict, dict]:
    """A gate.json's speed changes and statuses, by model."""
    speed = [c for c in summary["checks"] if c["check"] == "speed" and c["change"] is not None]
    return {c["model"]: c["change"] for c in speed}, {c["model"]: c["status"] for c in speed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10, help="rerun pairs: PAIRS + 1 plain runs, one after another")
    parser.add_argument("--variant-runs", type=int, default=2,
                        help="runs of each variant (slow, busy, threads), each gated against every plain run")
    parser.add_argument("--slow-model", default="unet-resnet10t")
    parser.add_argument("--slowdown", type=float, default=0.3, help="fewer images/s, as a fraction (0.3: 30 %%)")
    parser.add_argument("--threads", type=int, default=1, help="threads of a 'threads' run")
    parser.add_argument("--busy", type=int, default=1, help="cores kept busy by other processes in a 'busy' run")
    parser.add_argument("--extra", action="append", default=[], help="a suite override added to every run")
    parser.add_argument("--keep", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--gate-only", action="store_true", help="gate the runs already in --keep again")
    args = parser.parse_args()
    if args.gate_only and not args.keep:
        parser.error("--gate-only needs --keep")
    with tempfile.TemporaryDirectory(prefix="gate-noise-") as tmp:
        root = args.keep or Path(tmp)
        started = time.monotonic()
        plain = [root / f"plain-{i}" for i in range(args.pairs + 1)]
        variants = {v: [root / f"{v}-{i}" for i in range(args.variant_runs)] for v in ("slow", "busy", "threads")}
        for i, run in enumerate(plain if not args.gate_only else []):
            segbench_run(run, args.extra)
            print(f"plain run {i} done at {time.monotonic() - started:.0f} s", flush=True)
        for i in range(args.variant_runs if not args.gate_only else 0):
            for variant, runs in variants.items():
                segbench_run(runs[i], args.extra, args.slow_model if variant == "slow" else None, args.slowdown,
                             args.threads if variant == "threads" else None, args.busy if variant == "busy" else 0)
                print(f"{variant} run {i} done at {time.monotonic() - started:.0f} s", flush=True)
        report = {}
        pairs = [(plain[i + 1], plain[i]) for i in range(args.pairs)]
        pairs_of = {"rerun": pairs, **{v: [(r, b) for r in runs for b in plain] for v, runs in variants.items()}}
        for variant, gated in pairs_of.items():
            wrong, largest, slowed, reference = 0, 0.0, [], set()
            for n, (run, baseline) in enumerate(gated):
                summary = gate(run, baseline, root / "gates" / f"{variant}-{n}")
                changes, statuses = verdicts(summary)
                reference.add(f"{summary['settings']['speed_comparison']} {summary['settings']['speed_reference']}")
                if variant == "slow":  # the slowed model fails, every other passes
                    ok = statuses.get(args.slow_model) == "fail" and not any(
                        s == "fail" for m, s in statuses.items() if m != args.slow_model)
                    slowed.append(changes.get(args.slow_model, float("nan")))
                else:
                    ok = summary["passed"]
                wrong += not ok
                unslowed = [c for m, c in changes.items() if not (variant == "slow" and m == args.slow_model)]
                largest = max([largest, *map(abs, unslowed)])
                print(f"{variant} {run.name} vs {baseline.name}: {'PASS' if summary['passed'] else 'FAIL'} "
                      + ", ".join(f"{m} {c:+.1f}% {statuses[m]}" for m, c in changes.items())
                      + ("" if ok else "   <- wrong verdict"), flush=True)
            what = "slowed model not failed (or another failed)" if variant == "slow" else "false failures"
            line = (f"{variant}: {wrong} of {len(gated)} gates with {what}; largest speed change of an unchanged "
                    f"model {largest:.1f}%; comparison {', '.join(sorted(reference))}")
            if slowed:
                line += f"; slowed model's change {min(slowed):+.1f}% to {max(slowed):+.1f}%"
            print(line + "\n", flush=True)
            report[variant] = {"gates": len(gated), "wrong": wrong, "largest_unchanged_change": largest,
                               "slowed_changes": slowed, "reference": sorted(reference)}
        if args.keep:
            (root / "summary.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
