"""The failure table of a user's code (`imports:` modules): a builder that ignores the suite's classes, a metric
that raises in `update`, a module that would replace one of Python's own, a module that calls `sys.exit`, a
layout with no samples. Each is one line and exit 2, before any output folder or MLflow run exists, and no
marker file written by code that should not have run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from failure_table import assert_refused, snapshot, store_runs

SMALL = ["data.val_samples=2", "data.image_size=32", "eval.batch_size=2", "bench.iters=1", "bench.repeats=1",
         "bench.warmup=1", "progress=false", "train.enabled=false"]
HEAD = "import segbench\nimport torch\nfrom torch import nn\n"
MODEL = HEAD + "@segbench.register_model('tiny')\ndef tiny(num_classes):\n    return nn.Conv2d(3, num_classes, 1)\n"
METRIC = HEAD + '''from segbench.metrics.protocol import Accumulator, Scores


@segbench.register_metric("boom", definition="a metric that fails")
class Boom(Accumulator):
    @classmethod
    def build(cls, setup):
        return cls()

    def update(self, batch):
        {update}

    def compute(self, split):
        return Scores({{"boom": 0.5}})
'''
EMPTY_LAYOUT = HEAD + '''from segbench.data.base import DatasetInfo


@segbench.register_dataset("nothing")
class Nothing:
    DESCRIPTION = "a layout that finds no samples"

    @staticmethod
    def info(cfg):
        return DatasetInfo("nothing", ("a", "b"), ((0, 0, 0), (255, 255, 255)))

    @staticmethod
    def build(cfg, split, seed):
        return []
'''

USER_MODULES = ("threeout", "tiny", "boom_metric", "quit_metric", "late_metric", "quits", "quitter", "exits",
                "nothing", "json", "onnx")
# (id, {module file: source}, arguments, the line's pattern)
CASES = [
    ("builder ignores num_classes",
     {"threeout.py": HEAD + "@segbench.register_model('three')\ndef three(num_classes):\n"
                           "    return nn.Conv2d(3, 3, 1)\n"},  # the synthetic suite has 7 classes
     ["eval", "imports=[threeout]", "models=[three]"],
     r"model 'three': its builder threeout\.three gives a model whose output for a 2x3x64x64 batch with "
     r"num_classes=7 is \(2, 3, 64, 64\), expected logits of shape \(2, 7, 64, 64\)$"),
    ("metric raises in update", {"tiny.py": MODEL, "boom_metric.py": METRIC.format(update="raise ValueError('no')")},
     ["eval", "imports=[tiny,boom_metric]", "models=[tiny]"],
     r"metric 'boom' \(boom_metric\.Boom\): its update raised ValueError: no, on a trial batch of 2 x 16 x 16 "
     r"labels \(checked before the run\)$"),
    ("metric exits in update", {"tiny.py": MODEL, "quit_metric.py": METRIC.format(update="raise SystemExit(0)")},
     ["eval", "imports=[tiny,quit_metric]", "models=[tiny]"],
     r"metric 'boom' \(quit_metric\.Boom\): its update raised SystemExit: 0, on a trial batch"),
    ("a module named like Python's json", {"json.py": "open('MARKER', 'w').write('ran')\n"},
     ["eval", "imports=[json.py]", "models=[fcn32s-resnet10t]"],
     r"imports: 'json\.py' would replace Python's own module 'json' for the whole process; rename the file$"),
    ("the same under bench", {"json.py": "open('MARKER', 'w').write('ran')\n"},
     ["bench", "imports=[json.py]", "models=[fcn32s-resnet10t]"],
     r"imports: 'json\.py' would replace Python's own module 'json'"),
    ("a module named like an installed package", {"onnx.py": "open('MARKER', 'w').write('ran')\n"},
     ["eval", "imports=[onnx.py]", "models=[fcn32s-resnet10t]"],
     r"imports: 'onnx\.py' would replace (the installed module 'onnx' \(.*\)|the module 'onnx' already imported)"),
    ("a module that exits when imported", {"quits.py": "import sys\nsys.exit(0)\n"},
     ["eval", "imports=[quits]", "models=[fcn32s-resnet10t]"],
     r"imports: module 'quits' called sys\.exit\(0\) while being imported \(a module must not end the process\)$"),
    ("a module file that exits when imported", {"quits.py": "import sys\nsys.exit(0)\n"},
     ["bench", "imports=[quits.py]", "models=[fcn32s-resnet10t]"],
     r"imports: module 'quits\.py' called sys\.exit\(0\) while being imported"),
    ("a builder that exits", {"quitter.py": HEAD + "import sys\n@segbench.register_model('quitter')\n"
                                                   "def quitter(num_classes):\n    sys.exit(0)\n"},
     ["bench", "imports=[quitter]", "models=[quitter]"],
     r"model 'quitter': its builder quitter\.quitter raised SystemExit: 0$"),
    ("a layout that exits when built", {"exits.py": EMPTY_LAYOUT.replace("return []", "raise SystemExit(0)")},
     ["eval", "imports=[exits]", "data.name=nothing", "models=[fcn32s-resnet10t]"],
     r"a user's module \(exits\) called sys\.exit\(0\); the command stopped unfinished$"),
    ("a layout with no samples", {"nothing.py": EMPTY_LAYOUT},
     ["eval", "imports=[nothing]", "data.name=nothing", "models=[fcn32s-resnet10t]"],
     r"data\.name=nothing: the val split has no samples \(expected at least one image and its mask\)$"),
]


@pytest.mark.parametrize(("files", "args", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_user_modules_mistake_is_one_line_exit_2_and_leaves_nothing(cli, capsys, tmp_path, mlflow_uri, monkeypatch,
                                                                      files, args, pattern):
    import json

    for name, source in files.items():
        (tmp_path / name).write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    before = snapshot(tmp_path)

    code, out, err = cli(*args, *SMALL)

    assert_refused(code, out, err, pattern)
    assert sys.modules["json"] is json and hasattr(json, "dumps")  # Python's own json is still Python's
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "MARKER").exists() and not list(Path(tmp_path).rglob("*.partial"))
    assert store_runs(mlflow_uri) == []


def test_a_user_metric_that_fails_on_the_evaluations_batches_is_one_line_naming_it(cli, tmp_path, mlflow_uri,
                                                                                   monkeypatch):
    """Past the trial batch (it fails on larger ones only): the failure is the user's module's, named in one line
    with exit 2, not an internal error of segbench; the runs are closed FAILED and no results are written."""
    (tmp_path / "tiny.py").write_text(MODEL)
    (tmp_path / "late_metric.py").write_text(METRIC.format(update="assert batch.pred.shape[-1] <= 16, 'too big'"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)

    code, out, err = cli("eval", "imports=[tiny,late_metric]", "models=[tiny]", *SMALL, "output_dir=out")

    assert_refused(code, out, err, r"a user's module \(late_metric\) raised AssertionError: too big; the command "
                                   r"stopped unfinished$")
    assert not list(tmp_path.rglob("results.json"))
    assert {run.info.status for run in store_runs(mlflow_uri)} == {"FAILED"}



@pytest.mark.slow  # 5 s: the timing process's start-up
def test_a_user_model_that_fails_in_benchs_fresh_timing_process_is_one_line_naming_it(cli, tmp_path, mlflow_uri,
                                                                                        monkeypatch):
    """`segbench bench` times each model in a fresh process (bench.isolate, the default): a user's model that fails
    there (at the timing size only, past the checks) is named in one line with exit 2, as in one process, not as an
    internal error of segbench; no bench.json is written and no run is left FINISHED."""
    (tmp_path / "bigfail.py").write_text(HEAD + "class Small(nn.Conv2d):\n    def forward(self, x):\n"
                                         "        assert x.shape[-1] <= 64, 'too wide'\n"
                                         "        return super().forward(x)\n\n\n"
                                         "@segbench.register_model('small')\ndef small(num_classes):\n"
                                         "    return Small(3, num_classes, 1)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)

    code, out, err = cli("bench", "imports=[bigfail]", "models=[small]", *SMALL, "bench.batch_sizes=[1]",
                         "bench.input_size=[32,96]", "output_dir=out")

    assert_refused(code, out, err, r"a user's module \(bigfail\) raised AssertionError: too wide; the command "
                                   r"stopped unfinished$")
    assert not list(tmp_path.rglob("bench.json"))
    assert {run.info.status for run in store_runs(mlflow_uri)} == {"FAILED"}  # none left RUNNING
