"""The Python API as a program calls it: ``segbench.evaluate(model)`` scores the module it is given (checked against
a confusion matrix counted here by hand), in memory (the working folder stays empty, no store is opened), safely
(threads and names independent, nothing kept alive, mode restored, every mistake a UserError before anything is
created); the results' tables and figures; ``read_results``, ``gate`` and ``report`` as the CLI."""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

SMALL = ["data.val_samples=4", "data.image_size=32", "eval.batch_size=2", "progress=false"]


def _net(seed: int, outputs: int = 7):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, outputs, 1))


def _by_hand(model) -> np.ndarray:
    """The confusion matrix of ``model`` on the small synthetic split, counted here: argmax per pixel, ignored
    pixels (255) dropped, one bincount over the split."""
    import torch

    from segbench.data.registry import build_dataset
    from segbench.pipeline.validation import load_config

    cfg = load_config(SMALL + ["tracking.enabled=false"])
    split = build_dataset(cfg.data, cfg.data.val_split, cfg.seed)
    k = 7
    counts = np.zeros(k * k, np.int64)
    was = model.training
    model.eval()
    with torch.no_grad():
        for i in range(len(split)):
            image, mask = split[i][0], np.asarray(split[i][1])
            pred = model(image[None]).argmax(1)[0].numpy()
            keep = mask != 255
            counts += np.bincount(mask[keep].astype(np.int64) * k + pred[keep], minlength=k * k)
    model.train(was)
    return counts.reshape(k, k)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_evaluate_scores_the_module_in_memory_and_leaves_the_working_folder_empty(tmp_path, monkeypatch):
    import segbench
    from segbench.data.layouts.synthetic import CLASSES

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model = _net(0)
    model.train()
    model[1].eval()  # one submodule in eval mode: given back as it came
    results = segbench.evaluate(model, classes=CLASSES, overrides=SMALL)
    assert _files(tmp_path) == set()  # no outputs/, no results.json, no mlflow.db, no mlruns/
    assert model.training and not model[1].training and model[0].training
    expected = _by_hand(model)
    assert isinstance(results, segbench.Results)
    assert results.confusion("memory:model").tolist() == expected.tolist()
    assert results.mlflow.tracking_uri is None
    intersection = np.diag(expected)
    union = expected.sum(0) + expected.sum(1) - intersection
    present = union > 0
    assert results.leaderboard()["mIoU"][0] == pytest.approx((intersection[present] / union[present]).mean())
    table = results.per_class()
    assert list(table["class"]) == list(CLASSES) and list(table["support"]) == list(expected.sum(1))
    assert table["IoU"].to_numpy() == pytest.approx(np.where(present, intersection / np.maximum(union, 1), np.nan),
                                                    nan_ok=True)
    assert results.speed().empty and results.robustness().empty
    figure = results.plot_confusion()
    shown = figure.axes[0].images[0].get_array()
    assert np.allclose(shown, expected / expected.sum(1, keepdims=True), equal_nan=True)
    with pytest.raises(segbench.UserError, match="no model has both an mIoU and a speed"):
        results.plot_pareto()
    with pytest.raises(segbench.UserError, match="unknown model 'nope'"):
        results.confusion("nope")


def test_two_threads_with_the_default_name_each_score_their_own_model(tmp_path, monkeypatch):
    import segbench

    monkeypatch.chdir(tmp_path)
    models = [_net(1), _net(2)]
    expected = [_by_hand(m) for m in models]
    assert expected[0].tolist() != expected[1].tolist()
    got, errors = [None, None], []
    barrier = threading.Barrier(2)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(2):
                got[i] = segbench.evaluate(models[i], overrides=SMALL).confusion().tolist()
                assert got[i] == expected[i].tolist()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert got == [e.tolist() for e in expected]
    assert _files(tmp_path) == set()


def test_twenty_calls_with_twenty_names_keep_no_model_alive(tmp_path, monkeypatch):
    import segbench

    monkeypatch.chdir(tmp_path)
    alive = []
    for i in range(20):
        model = _net(i)
        alive.append(weakref.ref(model))
        results = segbench.evaluate(model, name=f"net{i}", overrides=SMALL)
        assert results.models[0].name == f"memory:net{i}"
        del model, results
    gc.collect()  # once: a full collection takes up to a second in a test process that has imported much
    kept = [i for i, ref in enumerate(alive) if ref() is not None]
    assert kept == [], f"calls {kept}: the model is still referenced after evaluate returned"
    assert _files(tmp_path) == set()


class _Tuple(__import__("torch").nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = __import__("torch").nn.Conv2d(3, 7, 1)

    def forward(self, x):
        return self.conv(x), x


class _Raises(__import__("torch").nn.Conv2d):
    def __init__(self, error: BaseException, after: int = 0):
        super().__init__(3, 7, 1)
        self.error, self.after, self.calls = error, after, 0

    def forward(self, x):
        self.calls += 1
        if self.calls > self.after:
            raise self.error
        return super().forward(x)


def _meta():
    import torch

    with torch.device("meta"):
        return torch.nn.Conv2d(3, 7, 1)


def _conv(outputs=7, dtype=None):
    import torch

    return torch.nn.Conv2d(3, outputs, 1).to(dtype or torch.float32)


def _classes():
    from segbench.data.layouts.synthetic import CLASSES

    return CLASSES


REFUSED = [  # (case, model, keyword arguments, the refusal)
    ("not a module", lambda: "not a model", {}, "expected a torch.nn.Module, got str"),
    ("a tuple out", _Tuple, {}, "returned a tuple"),
    ("float64 weights", lambda: _conv(dtype=__import__("torch").float64), {}, "weights are float64"),
    ("half weights", lambda: _conv(dtype=__import__("torch").float16), {}, "weights are float16"),
    ("on the meta device", _meta, {}, "meta device"),
    ("forward raises", lambda: _Raises(RuntimeError("boom")), {}, "raised RuntimeError: boom"),
    ("forward calls sys.exit", lambda: _Raises(SystemExit(0)), {}, r"raised SystemExit"),
    ("5 channels for 7 classes", lambda: _conv(5), {"classes": _classes()}, "outputs 5 channels, but classes names 7"),
    ("9 channels for 7 classes", lambda: _conv(9), {"classes": _classes()}, "outputs 9 channels, but classes names 7"),
    ("9 channels, no classes", lambda: _conv(9), {}, "9"),
    ("classes as a string", _conv, {"classes": "sky"}, "classes: expected a list"),
    ("overrides as a string", _conv, {"overrides": "data.val_samples=4"}, "overrides: expected a list"),
    ("an override not key=value", _conv, {"overrides": [3]}, "overrides: expected key=value"),
    ("suite as a number", _conv, {"suite": 3}, "suite: expected a suite name"),
    ("a name with a slash", _conv, {"name": "a/b"}, "name='a/b'"),
    ("a name not a string", _conv, {"name": 3}, "name=3"),
    ("normalisation a list", _conv, {"normalisation": [0.5]}, "normalisation: expected a Normalisation"),
    ("normalisation input_scale 0", _conv, {"normalisation": {"mean": [0.5] * 3, "std": [0.5] * 3,
                                                              "input_scale": 0}}, "input_range"),
    ("normalisation NaN std", _conv, {"normalisation": {"mean": [0.5] * 3, "std": [float("nan")] * 3}}, "std"),
    ("normalisation infinite mean", _conv, {"normalisation": {"mean": [float("inf")] * 3, "std": [1] * 3}},
     "mean must be 3 finite"),
    ("tracking a number", _conv, {"tracking": 3}, "tracking: expected True, False or a tracking URI"),
    ("output_dir a number", _conv, {"output_dir": 3}, "output_dir: expected a folder path"),
    ("models= in the overrides", _conv, {"overrides": ["models=[unet-resnet18]"]}, "remove models="),
    ("predictions without a folder", _conv, {"overrides": ["eval.save_predictions=true"]}, "output_dir="),
    ("an unknown suite key", _conv, {"overrides": ["eval.nosuchkey=1"]}, "nosuchkey"),
]


@pytest.mark.parametrize("case,make,kwargs,pattern", REFUSED, ids=[row[0] for row in REFUSED])
def test_evaluate_refuses_with_one_user_error_before_anything_exists(tmp_path, monkeypatch, case, make, kwargs,
                                                                     pattern):
    import segbench

    monkeypatch.chdir(tmp_path)
    model = make()
    before = getattr(model, "training", None)
    with pytest.raises(segbench.UserError, match=pattern) as refused:
        segbench.evaluate(model, **({"overrides": SMALL} | kwargs))
    assert "\n" not in str(refused.value)
    assert _files(tmp_path) == set(), case  # no outputs/**.partial, no mlflow.db
    assert getattr(model, "training", None) == before  # the mode is given back after a refusal too


def test_a_model_that_exits_or_is_interrupted_mid_run_is_reported_and_leaves_nothing(tmp_path, monkeypatch):
    import segbench

    monkeypatch.chdir(tmp_path)
    with pytest.raises(segbench.UserError, match=r"called sys.exit\(0\) during the evaluation"):
        segbench.evaluate(_Raises(SystemExit(0), after=1), overrides=SMALL)
    with pytest.raises(KeyboardInterrupt):
        segbench.evaluate(_Raises(KeyboardInterrupt(), after=1), overrides=SMALL)
    assert _files(tmp_path) == set()
    folder = tmp_path / "asked"  # with a folder asked for, a failure mid-run leaves it .partial, as the CLI does
    with pytest.raises(segbench.UserError, match=r"sys.exit\(3\)"):
        segbench.evaluate(_Raises(SystemExit(3), after=1), overrides=SMALL, output_dir=folder)
    left = _files(tmp_path)  # the .partial folder with what `resume=` needs, and no results
    assert {p.split("/")[0] for p in left} == {"asked.partial"} and not any(p.endswith("results.json") for p in left)


def test_output_dir_and_tracking_write_what_the_cli_writes(tmp_path, monkeypatch, mlflow_uri):
    import segbench
    from segbench.results.find import mlflow_results

    monkeypatch.chdir(tmp_path)
    results = segbench.evaluate(_net(3), overrides=SMALL, output_dir=tmp_path / "run", tracking=mlflow_uri)
    written = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert len(written) == 2 and written[0].startswith("per_class_memory") and written[1] == "results.json"
    on_disk = segbench.read_results(tmp_path / "run")
    assert on_disk.confusion().tolist() == results.confusion().tolist()
    logged = mlflow_results(results.mlflow.parent_run_id, mlflow_uri)
    assert logged.models[0].metrics == pytest.approx(results.models[0].metrics, nan_ok=True)
    # tracking without a folder: results.json is logged to MLflow and written nowhere else
    memory_only = segbench.evaluate(_net(3), overrides=SMALL, tracking=mlflow_uri)
    assert mlflow_results(memory_only.mlflow.parent_run_id, mlflow_uri).confusion().tolist() == \
        results.confusion().tolist()
    assert {p.name for p in tmp_path.iterdir()} <= {"run", "mlflow.db", "mlruns"}  # the store's own artifacts


def test_the_default_store_is_the_working_folders_of_each_call(tmp_path, monkeypatch):
    """A notebook that changes folder between calls logs each call into that folder's ``mlflow.db``: MLflow caches
    a store under its address for the life of the process, and the default address is relative."""
    import mlflow

    import segbench

    ids = {}
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        ids[folder] = segbench.evaluate(_net(3), overrides=SMALL, tracking=True).mlflow.parent_run_id
    for folder, parent in ids.items():
        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / folder / 'mlflow.db'}")
        parents = {run.info.run_id for experiment in client.search_experiments()
                   for run in client.search_runs([experiment.experiment_id])
                   if "mlflow.parentRunId" not in run.data.tags}
        assert parents == {parent}, folder  # each store holds its own call's run, and only it


def test_read_results_gate_and_report_return_what_the_cli_prints(tmp_path, monkeypatch, cli):
    import segbench

    monkeypatch.chdir(tmp_path)
    code, _, err = cli("run", "models=[fcn32s-resnet10t,unet-resnet10t]", "train.enabled=false", *SMALL,
                       "bench.enabled=true", "bench.batch_sizes=[1]", "bench.warmup=1", "bench.iters=2",
                       "bench.repeats=1", "tracking.enabled=false", f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    results = segbench.read_results(tmp_path / "run" / "results.json")
    assert list(results.speed()["model"]) == ["fcn32s-resnet10t", "unet-resnet10t"]
    assert (results.speed()["images_per_second"] > 0).all()
    figure = results.plot_pareto()
    from matplotlib.collections import PathCollection

    points = np.concatenate([c.get_offsets() for c in figure.axes[0].collections if isinstance(c, PathCollection)])
    assert sorted(points[:, 0].round(6)) == sorted(results.speed()["images_per_second"].round(6))
    code, printed, _ = cli("gate", str(tmp_path / "run"), str(tmp_path / "run"))
    verdict = segbench.gate(tmp_path / "run", tmp_path / "run")
    assert verdict.passed and verdict.exit_code == code == 0
    assert str(verdict).strip() == printed.strip()
    written = segbench.report([tmp_path / "run"], out=tmp_path / "reports")
    # the leaderboard and its site, and the exports (a model card per model, the suite's metafile)
    names = {p.name for p in written}
    assert names == {"leaderboard.md", "leaderboard.csv", "index.html", "README.md", "metafile.yaml"}
    code, printed, _ = cli("report", str(tmp_path / "run"), "--out", str(tmp_path / "reports-cli"))
    assert (tmp_path / "reports" / "synthetic" / "leaderboard.csv").read_text() == \
        (tmp_path / "reports-cli" / "synthetic" / "leaderboard.csv").read_text()
    with pytest.raises(segbench.UserError, match="no results file"):
        segbench.read_results(tmp_path / "nothing.json")
    with pytest.raises(segbench.UserError, match="max_drop"):
        segbench.gate(tmp_path / "run", tmp_path / "run", max_drop=0.5)


def test_import_segbench_stays_cheap_with_the_new_names():
    import subprocess

    done = subprocess.run([sys.executable, "-c", "import sys, segbench; print('torch' in sys.modules, "
                           "sorted(n for n in ('read_results', 'gate', 'report', 'Results') if n in dir(segbench)))"],
                          capture_output=True, text=True)
    assert done.stdout.split(maxsplit=1) == ["False", "['Results', 'gate', 'read_results', 'report']\n"], done.stderr


def test_a_plugin_that_calls_sys_exit_is_reported_by_run_and_bench(tmp_path, monkeypatch):
    import segbench

    monkeypatch.chdir(tmp_path)
    (tmp_path / "exits_plugin.py").write_text("import sys\nimport segbench\n\n\n@segbench.register_model('exits')\n"
                                              "def exits(num_classes):\n    sys.exit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for call in (segbench.run, segbench.bench):  # its registration is undone after the test (tests/user_code.py)
        with pytest.raises(segbench.UserError, match=r"sys.exit\(0\)|SystemExit"):
            call("synthetic", ["imports=[exits_plugin]", "models=[exits]", *SMALL, "tracking.enabled=false",
                               "bench.isolate=false"])
    assert not (tmp_path / "outputs").exists()


def test_the_robustness_table_holds_every_corrupted_view(tmp_path, monkeypatch):
    import segbench

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / "cache"))
    results = segbench.evaluate(_net(4), overrides=[*SMALL, "eval.corruptions=[gaussian_noise,contrast]",
                                                    "eval.severities=[1,3]"])
    table = results.robustness()
    assert sorted(zip(table["corruption"], table["severity"])) == [("contrast", 1), ("contrast", 3),
                                                                    ("gaussian_noise", 1), ("gaussian_noise", 3)]
    stored = results.models[0].robustness
    for name, rows in table.groupby("corruption"):  # the mean over severities, by hand, is the record's figure
        assert rows["mIoU"].mean() == pytest.approx(stored.per_corruption[name]["mIoU"])
    assert table["mIoU"].mean() == pytest.approx(stored.mPC)
    assert _files(work) == set()
