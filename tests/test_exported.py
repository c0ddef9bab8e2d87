"""Exported model files (onnx:, torchscript:, export:) score what the model they were exported from scores in eager
mode, through `segbench eval`: the same confusion matrix, pixel for pixel. The files are made here from one
briefly trained built-in model: ONNX by segbench's own exporter (segbench.deploy.onnx) with fixed and with dynamic
height and width, and with every axis fixed (batch 1) by torch's TorchScript-based exporter; TorchScript by
tracing; torch.export with a dynamic batch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("onnxruntime")

MODEL = "fcn32s-resnet10t"
EVAL = ["data.val_samples=5", "eval.batch_size=2", "bench.enabled=false", "progress=false", "tracking.enabled=false"]
FILES = {"fixed.onnx": "onnx", "dynamic.onnx": "onnx", "batch1.onnx": "onnx", "model.ts": "torchscript",
         "model.pt2": "export"}

pytestmark = pytest.mark.slow  # every test needs the module's exported files (one fixture, about a minute)


def _trained(num_classes: int) -> torch.nn.Module:
    """The model after a few steps on the synthetic training split, so that it predicts several classes."""
    from segbench.config.schema import DataConfig
    from segbench.data.registry import build_dataset
    from segbench.models import factory

    torch.manual_seed(0)
    model = factory.build(MODEL, num_classes, "random").module
    data = build_dataset(DataConfig(image_size=64, train_samples=32), "train", 0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(12):
        batch = [data[(step * 4 + i) % len(data)] for i in range(4)]
        images, masks = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch]).long()
        loss = torch.nn.functional.cross_entropy(model(images), masks, ignore_index=255)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, cli_for_setup) -> dict:
    """The files, the model's weights, and its eager `segbench eval` record."""
    from safetensors.torch import save_file
    from torch.export import Dim

    from segbench.deploy.onnx import TORCHSCRIPT_OPSET, export_onnx

    folder = tmp_path_factory.mktemp("exported")
    model = _trained(7)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "w.safetensors")
    example = torch.randn(2, 3, 64, 64)
    (folder / "fixed.onnx").write_bytes(export_onnx(model, example).data)
    dynamic = export_onnx(model, example, dynamic_spatial=True)
    assert dynamic.dynamic_axes == ["batch", "height", "width"]
    (folder / "dynamic.onnx").write_bytes(dynamic.data)
    with torch.no_grad():
        torch.onnx.export(model, (example[:1],), str(folder / "batch1.onnx"), dynamo=False,
                          opset_version=TORCHSCRIPT_OPSET)  # no dynamic axes: every axis fixed, batch 1
        torch.jit.trace(model, example).save(str(folder / "model.ts"))
    program = torch.export.export(model, (example,), dynamic_shapes=({0: Dim.DYNAMIC},))
    torch.export.save(program, str(folder / "model.pt2"))
    out = folder / "eager"
    code, _, err = cli_for_setup("eval", f"models=[{MODEL}]", f"weights.{MODEL}={folder / 'w.safetensors'}", *EVAL,
                                 f"output_dir={out}")
    assert code == 0, err[-3000:]
    record = json.loads((out / "results.json").read_text())["models"][0]
    return {"folder": folder, "eager": record}


def _record(cli, args: list[str], out: Path) -> dict:
    code, stdout, err = cli("eval", *args, *EVAL, f"output_dir={out}")
    assert code == 0, err
    return json.loads((out / "results.json").read_text())["models"][0]


def test_the_eager_reference_predicts_several_classes(exported):
    matrix = np.array(exported["eager"]["confusion_matrix"])
    assert (matrix.sum(0) > 0).sum() >= 3  # the comparisons below compare a non-trivial prediction


@pytest.mark.parametrize("file", list(FILES))
def test_an_exported_file_scores_what_the_model_scores_in_eager_mode(cli, exported, tmp_path, file):
    path = exported["folder"] / file
    record = _record(cli, [f"models=[{FILES[file]}:{path}]"], tmp_path / "out")
    eager = exported["eager"]
    assert record["confusion_matrix"] == eager["confusion_matrix"]
    assert record["metrics"]["mIoU"] == eager["metrics"]["mIoU"]
    weights = record["origin"]["weights"]
    assert weights["kind"] == "exported" and weights["format"] == FILES[file] and weights["path"] == str(path)
    assert weights["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights["executes_code"] is (FILES[file] == "torchscript")  # a TorchScript file is a program
    assert record["origin"]["label_mapping"]["names_from"] == "suite"
    fixed = {"fixed.onnx": [None, 3, 64, 64], "batch1.onnx": [1, 3, 64, 64], "model.pt2": [None, 3, 64, 64]}
    assert weights["input_shape"] == fixed.get(file, [None, 3, None, None] if file == "dynamic.onnx" else [None] * 4)


def test_eval_class_map_names_a_files_outputs_by_index(cli, exported, tmp_path):
    from segbench.config.schema import DataConfig
    from segbench.data.registry import dataset_info

    classes = dataset_info(DataConfig()).classes
    reversed_map = [f"eval.class_map.{i}={classes[len(classes) - 1 - i]}" for i in range(len(classes))]
    record = _record(cli, [f"models=[onnx:{exported['folder'] / 'fixed.onnx'}]", *reversed_map], tmp_path / "out")
    eager = np.array(exported["eager"]["confusion_matrix"])
    assert np.array_equal(np.array(record["confusion_matrix"]), eager[:, ::-1])  # output i predicts class 6 - i


def test_the_suite_states_a_files_normalisation(cli, exported, tmp_path):
    path = exported["folder"] / "fixed.onnx"
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"models": [f"onnx:{path}"], "data": {"name": "synthetic", "image_size": 64},
                                     "normalisation": {f"onnx:{path}": {"mean": [0.5, 0.5, 0.5],
                                                                        "std": [0.5, 0.5, 0.5]}}}))
    code, _, err = cli("eval", f"suite={suite}", f"models=[onnx:{path}]", *EVAL, f"output_dir={tmp_path / 'out'}")
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "results.json").read_text())["models"][0]
    assert record["origin"]["normalisation"]["mean"] == [0.5, 0.5, 0.5]
    assert record["confusion_matrix"] != exported["eager"]["confusion_matrix"]  # the file saw other inputs


def test_bench_times_a_file_as_it_runs(cli, exported, tmp_path):
    path = exported["folder"] / "batch1.onnx"
    code, _, err = cli("bench", f"models=[onnx:{path}]", "bench.iters=2", "bench.repeats=1", "bench.warmup=1",
                       "bench.isolate=false", "progress=false", "tracking.enabled=false",
                       f"output_dir={tmp_path / 'out'}")
    assert code == 0, err
    speed = json.loads((tmp_path / "out" / "bench.json").read_text())["models"][0]["speed"]
    assert [(s["backend"], s["provider"], s["input_shape"]) for s in speed] == [
        ("eager", "CPUExecutionProvider", [1, 3, 64, 64])]


def test_a_torch_export_file_is_deployed_on_other_backends(cli, exported, tmp_path):
    path = exported["folder"] / "model.pt2"
    record = _record(cli, [f"models=[export:{path}]", "eval.backends=[eager,onnxruntime]"], tmp_path / "out")
    entry = next(e for e in record["evaluation"]["backends"] if e["backend"] == "onnxruntime")
    assert entry["status"] == "ok"
    assert abs(entry["metrics"]["mIoU"] - exported["eager"]["metrics"]["mIoU"]) <= 1e-4


def test_an_exported_file_is_not_trained(cli, exported, tmp_path):
    code, _, err = cli("run", f"models=[onnx:{exported['folder'] / 'fixed.onnx'}]", "train.iters=1",
                       "train.batch_size=2", "data.train_samples=2", *EVAL, f"output_dir={tmp_path / 'out'}")
    assert code == 2
    assert err.strip().splitlines()[-1].endswith("an exported file is evaluated and timed, not trained: use "
                                                 "`segbench eval` or `segbench bench` (or train.enabled=false)")


def test_a_pt2_archive_is_read_once_and_its_guard_code_never_runs(cli, exported, tmp_path, monkeypatch):
    """torch.export.load runs nothing here, once: the program's guard code (Python that ``module()`` would compile
    and run with every call) is dropped, and the file scores what the original does."""
    import zipfile

    marker = tmp_path / "MARKER"
    with zipfile.ZipFile(exported["folder"] / "model.pt2") as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    name = next(n for n in members if n.endswith("models/model.json"))
    program = json.loads(members[name])
    program["guards_code"] = [f"open({str(marker)!r}, 'w').write('ran') > 0"]
    members[name] = json.dumps(program).encode()
    with zipfile.ZipFile(tmp_path / "guarded.pt2", "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    loads = []
    real = torch.export.load
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: loads.append(a) or real(*a, **k))

    record = _record(cli, [f"models=[export:{tmp_path / 'guarded.pt2'}]"], tmp_path / "out")

    assert not marker.exists()
    assert len(loads) == 1  # at config time; the build uses the same program
    assert record["confusion_matrix"] == exported["eager"]["confusion_matrix"]
