"""A user's own components: a module named by ``imports:`` registers a model that is then trained, evaluated, timed
and reported; an installed package found by its ``segbench.plugins`` entry point; the Python API; and the refusals,
each one line with exit 2 and nothing created."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "plugin"
SMALL = ["train.iters=2", "train.batch_size=2", "data.train_samples=4", "data.val_samples=4", "data.image_size=32",
         "eval.batch_size=4", "progress=false"]

TINYNET = '''
import segbench
from torch import nn


@segbench.register_model("tinynet")
def tinynet(num_classes):
    """Two convolutions (a user's model in a test)."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))


@segbench.register_model("headonly")
def headonly(backbone, num_classes):
    """A user architecture on a timm backbone: NAME-BACKBONE."""
    import timm
    import torch

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = timm.create_model(backbone, features_only=True, out_indices=(-1,), pretrained=False)
            self.head = nn.Conv2d(self.body.feature_info.channels()[-1], num_classes, 1)

        def forward(self, x):
            y = self.head(self.body(x)[-1])
            return torch.nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    return Net()
'''


def segbench_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``segbench ARGS`` as a user types it, in ``cwd``."""
    full_env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)} | (env or {})
    return subprocess.run([sys.executable, "-m", "segbench", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def _created(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


def test_a_module_named_by_imports_registers_a_model_that_is_trained_evaluated_timed_and_reported(tmp_path, cli,
                                                                                                monkeypatch):
    (tmp_path / "my_models.py").write_text(TINYNET)
    monkeypatch.chdir(tmp_path)  # imports=[my_models]: found in the working folder, as a user's shell finds it
    code, _, err = cli("run", "imports=[my_models]", "models=[tinynet,headonly-resnet10t]", *SMALL,
                       "bench.batch_sizes=[1]", "bench.iters=2", "bench.repeats=1", "bench.warmup=1",
                       "tracking.enabled=false", f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    records = {m["name"]: m for m in results["models"]}
    assert set(records) == {"tinynet", "headonly-resnet10t"}
    plugin = records["tinynet"]["origin"]["plugin"]
    assert plugin["module"] == "my_models" and plugin["builder"] == "my_models.tinynet"
    assert plugin["executes_code"] is True  # recorded: the user's code ran
    assert plugin["sha256"] == hashlib.sha256((tmp_path / "my_models.py").read_bytes()).hexdigest()
    for record in records.values():
        assert record["train"] is not None and 0.0 <= record["metrics"]["mIoU"] <= 1.0
        assert record["speed"] and record["speed"][0]["images_per_second"] > 0
    code, _, err = cli("report", str(tmp_path / "run"), "--out", str(tmp_path / "reports"))  # reads files only
    assert code == 0, err
    board = next((tmp_path / "reports").rglob("leaderboard.csv")).read_text()
    assert "tinynet" in board and "headonly-resnet10t" in board


BROKEN = {
    "missing": ("imports=[no_such_module]", None, "imports: cannot import module 'no_such_module'"),
    "raises on import": ("imports=[bad_import]", "raise RuntimeError('boom at import')\n",
                         "imports: module 'bad_import' failed to import: RuntimeError: boom at import"),
    "registered twice": ("imports=[twice]", "import segbench\nfrom torch import nn\n"
                         "@segbench.register_model('unet')\ndef unet(num_classes):\n    return nn.Identity()\n",
                         "model 'unet' is already registered (by segbench); twice.unet registers it again"),
    "builder raises": ("imports=[raising]", "import segbench\n@segbench.register_model('raiser')\n"
                       "def raiser(num_classes):\n    raise ValueError('no such thing')\n",
                       "model 'raiser': its builder raising.raiser raised ValueError: no such thing"),
    "builder returns no module": ("imports=[returns_int]", "import segbench\n@segbench.register_model('raiser')\n"
                                  "def raiser(num_classes):\n    return 3\n",
                                  "model 'raiser': its builder returns_int.raiser returned int, expected a "
                                  "torch.nn.Module"),
    "wrong output shape": ("imports=[halfsize]", "import segbench\nfrom torch import nn\n"
                           "@segbench.register_model('raiser')\ndef raiser(num_classes):\n"
                           "    return nn.Conv2d(3, num_classes, 2, stride=2)\n",
                           "is (2, 7, 32, 32), expected logits of shape (2, 7, 64, 64)"),
    "no num_classes": ("imports=[noclasses]", "import segbench\n@segbench.register_model('raiser')\n"
                       "def raiser(k):\n    return None\n", "the builder must take a 'num_classes' parameter"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_user_module_is_one_line_exit_2_before_anything_exists(case, tmp_path, cli, monkeypatch):
    override, source, message = BROKEN[case]
    module = override.partition("[")[2].rstrip("]")
    if source is not None:
        (tmp_path / f"{module}.py").write_text(source)
    model = "raiser" if "raiser" in (source or "") else "unet-resnet10t"
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = _created(tmp_path)
    code, out, err = cli("run", override, f"models=[{model}]", *SMALL, "bench.enabled=false")
    sys.modules.pop(module, None)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("segbench: error: ") and message in err, err
    assert _created(tmp_path) == before  # no output folder, no mlflow.db


def test_a_suite_file_names_its_imports_beside_it(tmp_path, cli, monkeypatch):
    suite_dir = tmp_path / "suites"
    suite_dir.mkdir()
    (suite_dir / "mine_models.py").write_text(TINYNET.replace('"tinynet"', '"tinynet2"')
                                              .replace('"headonly"', '"headonly2"'))
    (suite_dir / "mine.yaml").write_text("imports: [mine_models.py]\nmodels: [tinynet2]\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("run", f"suite={suite_dir / 'mine.yaml'}", *SMALL, "bench.enabled=false",
                         "tracking.enabled=false", f"output_dir={tmp_path / 'out'}")
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "results.json").read_text())["models"][0]
    assert record["name"] == "tinynet2" and record["origin"]["plugin"]["file"] == str(suite_dir / "mine_models.py")


def _site_with_example_plugin(site: Path) -> Path:
    """The example plugin as pip installs it: its package and a .dist-info whose entry_points.txt declares it."""
    shutil.copytree(EXAMPLE / "segbench_example_plugin", site / "segbench_example_plugin")
    info = site / "segbench_example_plugin-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: segbench-example-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[segbench.plugins]\nexample = segbench_example_plugin\n")
    (info / "top_level.txt").write_text("segbench_example_plugin\n")
    (info / "RECORD").write_text("")
    return site


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The example plugin installed (``_site_with_example_plugin``) for this process too: its folder on sys.path,
    and segbench's once-per-process look-ups of entry points and distributions made again before and after."""
    from segbench.core import plugins

    site = _site_with_example_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    plugins.load_entry_points.cache_clear()
    plugins._distributions.cache_clear()
    yield site
    plugins.load_entry_points.cache_clear()
    plugins._distributions.cache_clear()


@pytest.mark.slow
def test_an_installed_plugin_package_is_listed_with_its_package_and_runs(tmp_path, installed, cli):
    from fixtures_layouts import write_image, write_mask

    code, listed, err = cli("list", "models")
    assert code == 0, err
    line = next(line for line in listed.splitlines() if line.startswith("tinyseg "))
    assert "[segbench-example-plugin 0.1.0]" in line and line.endswith("(user code: it runs in segbench's process)")
    assert not next(n for n in listed.splitlines() if n.startswith("unet ")).endswith("process)")
    code, datasets, err = cli("list", "datasets")
    assert code == 0, err
    line = next(line for line in datasets.splitlines() if line.startswith("suffix_pairs "))
    assert line.endswith("(user code: it runs in segbench's process)")
    root = tmp_path / "data"
    for split in ("train", "val"):
        for i in range(2):
            write_image(root / split / f"img{i}.png", seed=i, size=(32, 32))
            write_mask(root / split / f"img{i}_mask.png", (np.arange(32 * 32).reshape(32, 32) % 2).astype(np.uint8))
    # the run as a user starts it: a new process that finds the package by its entry point alone
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(installed)])}
    done = segbench_cli("run", "models=[tinyseg]", "data.name=suffix_pairs", f"data.root={root}",
                        "data.classes=[even,odd]", "train.iters=2", "train.batch_size=2", "eval.batch_size=2",
                        "bench.enabled=false", "progress=false", "tracking.enabled=false",
                        f"output_dir={tmp_path / 'run'}", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "run" / "results.json").read_text())["models"][0]
    assert record["origin"]["plugin"] | {} and record["origin"]["plugin"]["package"] == "segbench-example-plugin"
    assert record["origin"]["plugin"]["version"] == "0.1.0"


@pytest.mark.slow
def test_the_example_plugin_passes_its_own_tests(tmp_path, installed, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:xdist", str(EXAMPLE / "tests")]) == 0


def test_the_api_runs_a_suite_and_returns_typed_results(tmp_path, monkeypatch, mlflow_uri):
    import segbench
    from segbench.results.schema import Results

    monkeypatch.chdir(tmp_path)
    results = segbench.run("synthetic", ["models=[unet-resnet10t]", *SMALL, "bench.enabled=false",
                                         f"tracking.uri={mlflow_uri}", f"output_dir={tmp_path / 'run'}"])
    assert isinstance(results, Results)
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results.models[0].metrics["mIoU"] == on_disk["models"][0]["metrics"]["mIoU"]
    board = results.leaderboard()
    assert list(board["model"]) == ["unet-resnet10t"] and board["mIoU"][0] == on_disk["models"][0]["metrics"]["mIoU"]
    with pytest.raises(segbench.UserError, match="unknown model 'unet-nosuchbackbone'|backbone"):
        segbench.run("synthetic", ["models=[unet-nosuchbackbone]"])


def test_evaluate_of_an_in_memory_model_equals_segbench_eval_of_its_saved_state_dict(tmp_path, monkeypatch, cli):
    import torch

    import segbench
    from segbench.data.layouts.synthetic import CLASSES
    from segbench.models import factory

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = factory.build("fcn32s-resnet10t", len(CLASSES), "random").module
    torch.save(model.state_dict(), tmp_path / "model.pth")
    common = ["data.val_samples=6", "eval.batch_size=2", "progress=false", "tracking.enabled=false"]
    code, _, err = cli("eval", "models=[fcn32s-resnet10t]", f"weights.fcn32s-resnet10t={tmp_path / 'model.pth'}",
                       *common, f"output_dir={tmp_path / 'eval'}")
    assert code == 0, err
    from_file = json.loads((tmp_path / "eval" / "results.json").read_text())["models"][0]
    in_memory = segbench.evaluate(model, suite="synthetic", classes=CLASSES,
                                  overrides=[*common, f"output_dir={tmp_path / 'memory'}"])
    record = in_memory.models[0]
    assert record.name == "memory:model"
    assert record.metrics == pytest.approx(from_file["metrics"], abs=0, nan_ok=True)
    assert record.confusion_matrix == from_file["confusion_matrix"]
    # classes matched by name: the same model with its outputs in reverse order, named so, scores the same
    reversed_model = torch.nn.Sequential(model, _Flip())
    flipped = segbench.evaluate(reversed_model, classes=tuple(reversed(CLASSES)), name="flipped",
                                overrides=[*common, f"output_dir={tmp_path / 'flipped'}"])
    assert flipped.models[0].confusion_matrix == from_file["confusion_matrix"]


class _Flip(__import__("torch").nn.Module):
    def forward(self, logits):
        return logits.flip(1)


def test_evaluate_refuses_what_is_not_a_model_with_a_user_error(tmp_path, monkeypatch):
    import segbench

    monkeypatch.chdir(tmp_path)
    with pytest.raises(segbench.UserError, match="expected a torch.nn.Module, got str"):
        segbench.evaluate("not a model")
    with pytest.raises(segbench.UserError, match="normalisation"):
        import torch

        segbench.evaluate(torch.nn.Conv2d(3, 7, 1), normalisation={"mean": [0.5]})
    assert _created(tmp_path) == set()


def test_import_segbench_does_not_import_torch():
    done = subprocess.run([sys.executable, "-c", "import sys, segbench; segbench.__version__; "
                           "print('torch' in sys.modules, 'segbench.api.suites' in sys.modules)"],
                          capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_the_readme_example_of_evaluate_runs_as_written(tmp_path, monkeypatch, capsys):
    readme = (REPO / "README.md").read_text()
    start = readme.index("```python", readme.index("segbench.evaluate"))
    code = textwrap.dedent(readme[start + len("```python"): readme.index("```", start + 3)])
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})  # its own namespace: as a script
    assert "mIoU" in capsys.readouterr().out
    assert _created(tmp_path) == set()  # nothing written, no store opened
