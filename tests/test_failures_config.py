"""The failure table of the configuration: each value a user can get wrong, through the real CLI, is one line naming
the key and what was expected, exit 2, before anything exists (no output folder, no ``mlflow.db``, nothing changed in
the working folder). Types and ranges are declared once on the fields (``segbench.config.schema``); these rows check
that the declarations reach the user."""

from __future__ import annotations

from pathlib import Path

import pytest
from failure_table import assert_refused, snapshot

TINY = ["models=[unet-resnet10t]", "train.iters=2", "train.batch_size=2", "data.train_samples=4",
        "data.val_samples=2", "eval.batch_size=2", "bench.enabled=false", "progress=false"]


def _suite_file(tmp: Path, text: str) -> str:
    (tmp / "mine.yaml").write_text(text)
    return f"suite={tmp / 'mine.yaml'}"


# (id, command-line arguments given the working folder, pattern the one line must match)
CASES = [
    ("device that is not one", lambda t: ["run", *TINY, "device=cudaXYZ"],
     r"device: expected auto, cpu, cuda, cuda:N or mps, got the string 'cudaXYZ'"),
    ("learning rate NaN", lambda t: ["run", *TINY, "train.lr=nan"], r"train\.lr: expected a positive number"),
    ("learning rate zero", lambda t: ["run", *TINY, "train.lr=0"], r"train\.lr: expected a positive number"),
    ("negative seed", lambda t: ["run", *TINY, "seed=-1"], r"seed: expected a non-negative integer"),
    ("seed beyond numpy's range", lambda t: ["run", *TINY, "seed=4294967296"],
     r"seed: expected .* up to 4,294,967,295"),
    ("negative weight decay", lambda t: ["run", *TINY, "train.weight_decay=-0.1"],
     r"train\.weight_decay: expected a non-negative number"),
    ("negative momentum", lambda t: ["run", *TINY, "train.momentum=-0.9"], r"train\.momentum: expected a non-negative"),
    ("momentum above 1", lambda t: ["run", *TINY, "train.momentum=1.5"], r"train\.momentum: .* up to 1, got .*1\.5"),
    ("negative workers", lambda t: ["run", *TINY, "data.num_workers=-1"],
     r"data\.num_workers: expected a non-negative integer"),
    ("NaN scale", lambda t: ["run", *TINY, "eval.scales=[nan]"], r"eval\.scales\[0\]: expected a positive number"),
    ("infinite scale", lambda t: ["run", *TINY, "eval.scales=[1.0,inf]"], r"eval\.scales\[1\]: expected a positive"),
    ("no scales", lambda t: ["run", *TINY, "eval.scales=[]"], r"eval\.scales: expected a list"),
    ("class weights of the wrong length", lambda t: ["run", *TINY, "train.class_weights=[1.0,2.0]"],
     r"train\.class_weights: expected one number per class \(7 for synthetic\), got 2"),
    ("negative class weight", lambda t: ["run", *TINY, "train.class_weights=[1,1,1,1,1,1,-1]"],
     r"train\.class_weights\[6\]: expected a non-negative number"),
    ("huge calibration bins", lambda t: ["run", *TINY, "eval.calibration_bins=1000000000000"],
     r"eval\.calibration_bins: expected a positive integer up to 10,000"),
    ("bench batch beyond the CPU's memory", lambda t: ["bench", *TINY, "device=cpu", "bench.enabled=true",
                                                       "bench.batch_sizes=[1,65536]"],
     r"bench\.batch_sizes: a batch of 65536 at 64x64 would need about .* GiB .* on the CPU"),
    ("infinite bench time", lambda t: ["bench", *TINY, "bench.min_seconds=inf"],
     r"bench\.min_seconds: expected a non-negative number"),
    ("min_lr above lr", lambda t: ["run", *TINY, "train.lr=0.01", "train.min_lr=5"],
     r"train\.min_lr: expected at most train\.lr \(0\.01\), got the number 5"),
    ("poly power NaN", lambda t: ["run", *TINY, "train.poly_power=nan"], r"train\.poly_power: expected a non-negative"),
    ("NaN spacing", lambda t: ["run", *TINY, "data.spacing=[1.0,nan]"], r"data\.spacing\[1\]: expected a positive"),
    ("spacing of one value", lambda t: ["run", *TINY, "data.spacing=[1.0]"],
     r"data\.spacing: expected \[row, column\]"),
    ("value for a section", lambda t: ["run", *TINY, "train=5"], r"config key 'train' is a section, not a value"),
    ("section for a value", lambda t: ["run", *TINY, "seed.x=1"], r"config key 'seed' is a value, not a section"),
    ("loss weight NaN", lambda t: ["run", *TINY, "train.loss={ce: nan}"], r"train\.loss\.ce: expected a non-negative"),
    ("loss as a list", lambda t: ["run", *TINY, "train.loss=[ce]"], r"train\.loss: expected an object, got a list"),
    ("models as a mapping", lambda t: ["run", *TINY, "models={a: 1}"],
     r"config key 'models' is a value, not a section"),
    ("weights as a list", lambda t: ["run", *TINY, "weights=[]"], r"weights: expected an object, got a list"),
    ("label map beyond 8 bits", lambda t: ["run", *TINY, "data.label_map={300: 1}"],
     r"data\.label_map\[300\]: expected a non-negative integer up to 255"),
    ("scale range reversed", lambda t: ["run", *TINY, "data.scale_range=[2.0,0.5]"],
     r"data\.scale_range: expected \[low, high\] with low <= high"),
    ("crop of three sizes", lambda t: ["run", *TINY, "data.crop_size=[1,2,3]"],
     r"data\.crop_size: expected \[height, width\] of positive integers"),
    ("unknown precision", lambda t: ["bench", *TINY, "bench.precision=fp8"],
     r"bench\.precision: expected one of fp32, bf16, fp16, got the string 'fp8'"),
    ("unknown mode", lambda t: ["run", *TINY, "eval.mode=slid"], r"eval\.mode: .*did you mean 'slide'"),
    ("boolean that is not one", lambda t: ["run", *TINY, "eval.flip=maybe"], r"eval\.flip: expected true or false"),
    ("empty suite name", lambda t: ["run", *TINY, "name=''"], r"name: expected a non-empty string"),
    ("zero bench repeats", lambda t: ["bench", *TINY, "bench.repeats=0"], r"bench\.repeats: expected a positive"),
    ("boundary band of the whole image", lambda t: ["run", *TINY, "eval.boundary_dilation=1"],
     r"eval\.boundary_dilation: expected a positive number below 1"),
    ("unknown key under a value", lambda t: ["run", *TINY, "train.lr.x=1"], r"'train\.lr' is a value"),
    ("negative value in a suite file", lambda t: ["run", _suite_file(t, "models: [unet-resnet10t]\nseed: -3\n")],
     r"mine\.yaml: seed: expected a non-negative integer"),
    ("unknown key in a suite file", lambda t: ["run", _suite_file(t, "models: [unet-resnet10t]\ntrain: {lrr: 1}\n")],
     r"mine\.yaml: unknown config key 'train\.lrr'; did you mean 'train\.lr'"),
]


@pytest.mark.parametrize(("setup", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_value_is_one_line_naming_the_key_exit_2_and_leaves_nothing(cli, tmp_path, monkeypatch, setup,
                                                                           pattern):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path.parent / f"{tmp_path.name}-cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = setup(tmp_path)
    before = snapshot(tmp_path, skip=())

    code, out, err = cli(*args)

    assert_refused(code, out, err, pattern)
    assert snapshot(tmp_path, skip=()) == before  # nothing written, nothing deleted
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_value_within_its_range_is_accepted():
    """The ranges refuse only what cannot work: edge values that can are accepted as given."""
    from segbench.pipeline.validation import load_config

    cfg = load_config(["models=[unet-resnet10t]", "seed=0", "train.momentum=0", "train.weight_decay=0",
                       "train.min_lr=0.001", "train.lr=0.001", "train.poly_power=0", "eval.scales=[0.5,2.0]",
                       "train.class_weights=[1,1,1,1,1,1,0.5]", "bench.min_seconds=0", "data.spacing=[0.5,2]",
                       "bench.batch_sizes=[1,8]", "imports=[]"])
    assert (cfg.train.min_lr, cfg.train.lr, cfg.data.spacing, cfg.train.class_weights[-1]) == (0.001, 0.001,
                                                                                               [0.5, 2.0], 0.5)
    assert isinstance(cfg.data.spacing[1], float) and cfg.imports == []
