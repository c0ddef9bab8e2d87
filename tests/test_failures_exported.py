"""The failure table of exported model files (onnx:, torchscript:, export:): every refusal exits 2 with one line
naming the file and what was expected, before anything exists (no output folder, no MLflow run, no file changed).
The ONNX files are written by hand with onnx.helper (a 1x1 convolution, 3 -> 7 channels): no export needed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from failure_table import assert_refused, snapshot, store_runs

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TINY = ["data.val_samples=2", "eval.batch_size=2", "bench.iters=1", "bench.repeats=1", "bench.warmup=1",
        "progress=false"]


def conv_onnx(path: Path, shape: list, elem: int = 1, labels: bool = False) -> Path:
    """An ONNX file: one 1x1 convolution from a float input of ``shape`` (``elem``: onnx.TensorProto type) to 7
    channels (``labels``: then their argmax, int64 N x H x W)."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(torch.randn(7, 3, 1, 1).numpy(), "w")
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("Conv", ["xf", "w"], ["y"])]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape[0], 7, *shape[2:]])
    if labels:
        nodes.append(helper.make_node("ArgMax", ["y"], ["labels"], axis=1, keepdims=0))
        out = helper.make_tensor_value_info("labels", TensorProto.INT64, [shape[0], *shape[2:]])
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", elem, shape)], [out], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def pt2(path: Path, dynamic: bool = False, channels: int = 7) -> Path:
    shapes = ({0: torch.export.Dim.DYNAMIC},) if dynamic else None
    program = torch.export.export(torch.nn.Conv2d(3, channels, 1), (torch.randn(2, 3, 8, 8),), dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def payload(marker: Path) -> bytes:
    """A pickle (protocol 0) that writes ``marker`` when it is unpickled: builtins.exec of one line."""
    return b"cbuiltins\nexec\n(V" + f"open({str(marker)!r}, 'w').write('ran')".encode() + b"\ntR."


def tampered(tmp: Path, change: Callable[[dict, Path], None], dynamic: bool = False, channels: int = 7) -> list[str]:
    """`segbench eval` of a .pt2 archive saved by torch, then changed member by member (``change`` gets the members
    by their name under the archive's root folder, and the marker file a payload would write)."""
    import zipfile

    with zipfile.ZipFile(pt2(tmp / "good.pt2", dynamic, channels)) as archive:
        root = next(n for n in archive.namelist() if n.endswith("archive_format")).removesuffix("archive_format")
        members = {n.removeprefix(root): archive.read(n) for n in archive.namelist()}
    change(members, tmp / "MARKER")
    with zipfile.ZipFile(tmp / "bad.pt2", "w") as archive:
        for name, data in members.items():
            archive.writestr(root + name, data)
    return ["eval", *TINY, "data.image_size=8", f"models=[export:{tmp / 'bad.pt2'}]"]


def _pickled_entry(members: dict, marker: Path, kind: str, path_name: str) -> None:
    config = f"data/{kind}/model_{kind}_config.json"
    entries = json.loads(members[config])
    entries["config"]["evil"] = {"path_name": path_name, "is_param": False, "use_pickle": True,
                                 "tensor_meta": None}
    members[config] = json.dumps(entries).encode()
    members[f"data/{kind}/{path_name}"] = payload(marker)


def _in_program(members: dict, old: str, new: str) -> None:
    text = members["models/model.json"].decode()
    assert old in text
    members["models/model.json"] = text.replace(old, new, 1).encode()


def _states_seven_outputs(members: dict, marker: Path) -> None:
    """The program's output is stated as 2 x 7 x 8 x 8 (the suite's 7 classes); its convolution returns 5."""
    program = json.loads(members["models/model.json"])
    program["graph_module"]["graph"]["tensor_values"]["conv2d"]["sizes"][1] = {"as_int": 7}
    members["models/model.json"] = json.dumps(program).encode()


def _calls_python(members: dict, marker: Path) -> None:
    """The program's convolution node calls os.system (reachable as torch.os.system) instead of an operator."""
    program = json.loads(members["models/model.json"])
    program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"
    members["models/model.json"] = json.dumps(program).encode()


def _module_import(members: dict, marker: Path) -> None:
    """The input tree spec's context names an enum of module ``this`` (torch would import it: it prints a poem)."""
    program = json.loads(members["models/model.json"])
    signature = program["graph_module"]["module_call_graph"][0]["signature"]
    version, spec = json.loads(signature["in_spec"])
    spec["context"] = json.dumps({"__enum__": True, "fqn": "this:x", "name": "y"})
    signature["in_spec"] = json.dumps([version, spec])
    members["models/model.json"] = json.dumps(program).encode()


def fixed(tmp: Path) -> str:
    return f"onnx:{conv_onnx(tmp / 'fixed.onnx', [1, 3, 64, 64])}"


CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("onnx file missing", lambda t: ["eval", *TINY, f"models=[onnx:{t / 'nope.onnx'}]"],
     r"model 'onnx:.*nope\.onnx': file '.*nope\.onnx' does not exist"),
    ("onnx a folder", lambda t: ["eval", *TINY, f"models=[onnx:{t}]"], r"does not exist \(a folder; name the file"),
    ("onnx a text file", lambda t: (t / "m.onnx").write_text("not a model") and
     ["eval", *TINY, f"models=[onnx:{t / 'm.onnx'}]"], r"'.*m\.onnx' is not an ONNX model \(.*Protobuf parsing failed"),
    ("onnx a text file under a long path", lambda t: (t / ("a long folder name " * 6)).mkdir() or (
        t / ("a long folder name " * 6) / "m.onnx").write_text("not a model") and
     ["eval", *TINY, f"models=[onnx:{t / ('a long folder name ' * 6) / 'm.onnx'}]"],
     r"is not an ONNX model \(.*the file failed:\s*Protobuf parsing failed"),
    ("torchscript given a .pt2", lambda t: ["eval", *TINY, f"models=[torchscript:{pt2(t / 'm.pt2')}]"],
     r"'.*m\.pt2' is not a TorchScript archive \(torch\.jit\.save\) \(a torch\.export \.pt2 program is export:PATH\)"),
    ("export given a state dict", lambda t: torch.save({"w": torch.zeros(2)}, t / "w.pt") or
     ["eval", *TINY, f"models=[export:{t / 'w.pt'}]"], r"'.*w\.pt' is not a torch\.export program"),
    ("onnx integer input", lambda t: ["eval", *TINY, f"models=[onnx:{conv_onnx(t / 'i.onnx', ['N', 3, 64, 64], 7)}]"],
     r"the file has no float image input \(expected one float32 input N x 3 x H x W; it takes x tensor\(int64\)"),
    ("onnx one-channel input", lambda t: ["eval", *TINY, f"models=[onnx:{conv_onnx(t / 'g.onnx', ['N', 1, 64, 64])}]"],
     r"has no float image input .*it takes x tensor\(float\) \['N', 1, 64, 64\]"),
    ("onnx labels out", lambda t: ["eval", *TINY, "models=[onnx:" + str(conv_onnx(t / "l.onnx", ["N", 3, 64, 64],
                                                                                  labels=True)) + "]"],
     r"its first output is int64 of shape \['N', 64, 64\], not N x K x H x W float logits"),
    ("fixed shape, whole mode on other sizes", lambda t: ["eval", *TINY, "data.image_size=96", f"models=[{fixed(t)}]"],
     r"onnx:.*fixed\.onnx: the file fixes its input to 64 x 64 \(height x width\), but eval\.mode=whole would feed "
     r"it 96 x 96: set eval\.mode=slide eval\.window=\[64,64\] eval\.stride=\[64,64\]$"),
    ("fixed shape, multi-scale", lambda t: ["eval", *TINY, "eval.scales=[1.0,1.5]", f"models=[{fixed(t)}]"],
     r"eval\.mode=whole would feed it 96 x 96: set eval\.mode=slide"),
    ("fixed shape, another window", lambda t: ["eval", *TINY, "eval.mode=slide", "eval.window=[32,32]",
                                               "eval.stride=[32,32]", f"models=[{fixed(t)}]"],
     r"eval\.mode=slide would feed it 32 x 32: set eval\.mode=slide eval\.window=\[64,64\]"),
    ("fixed batch, other bench batch", lambda t: ["bench", *TINY, "bench.batch_sizes=[1,4]", f"models=[{fixed(t)}]"],
     r"bench\.batch_sizes: the file of model 'onnx:.*' takes batches of exactly 1 images, not 4: set "
     r"bench\.batch_sizes=\[1\]$"),
    ("fixed shape, other bench size", lambda t: ["bench", *TINY, "bench.input_size=[64,96]", f"models=[{fixed(t)}]"],
     r"bench\.input_size: the file of model .* fixes its input to 64 x 64, not bench\.input_size=\[64,96\]: set "
     r"bench\.input_size=\[64,64\]$"),
    ("onnx on another backend", lambda t: ["eval", *TINY, "eval.backends=[eager,onnxruntime]", f"models=[{fixed(t)}]"],
     r"eval\.backends: model 'onnx:.*' runs its ONNX file on ONNX Runtime already .*backend onnxruntime does not "
     r"apply to it: set eval\.backends=\[eager\]"),
    ("onnx under autocast", lambda t: ["bench", *TINY, "bench.precision=bf16", f"models=[{fixed(t)}]"],
     r"bench\.precision: model 'onnx:.*' runs its ONNX file at the precision it was exported with"),
    # crafted .pt2 archives: torch.export.load would run each payload (it writes MARKER); segbench refuses them
    ("export: pickled sample inputs", lambda t: tampered(t, lambda m, mark: m.update(
        {"data/sample_inputs/model.pt": payload(mark)})),
     r"member '.*data/sample_inputs/model\.pt' of the archive holds pickled objects other than tensors \(torch would "
     r"unpickle them with weights_only=False\); segbench runs nothing from a model file"),
    ("export: a constant marked use_pickle", lambda t: tampered(
        t, lambda m, mark: _pickled_entry(m, mark, "constants", "tensor_9")),
     r"member '.*data/constants/tensor_9' of the archive \('evil'\) is marked use_pickle"),
    ("export: a weight marked use_pickle", lambda t: tampered(
        t, lambda m, mark: _pickled_entry(m, mark, "weights", "weight_9")),
     r"member '.*data/weights/weight_9' of the archive \('evil'\) is marked use_pickle"),
    ("export: a pickled Python object", lambda t: tampered(
        t, lambda m, mark: _pickled_entry(m, mark, "constants", "opaque_obj_0")),
     r"member '.*data/constants/opaque_obj_0' of the archive \('evil'\) is a pickled Python or TorchScript object"),
    ("export: torch's older pickled weights", lambda t: tampered(t, lambda m, mark: m.update(
        {"data/weights/model.pt": payload(mark)})),
     r"member '.*data/weights/model\.pt' of the archive is of torch's older, pickled format"),
    ("export: a compiled library", lambda t: tampered(t, lambda m, mark: m.update(
        {"data/aotinductor/model/model.so": b"\x7fELF"})),
     r"member '.*data/aotinductor/model/model\.so' of the archive is not part of a torch\.export program"),
    ("export: Python code in a symbolic expression", lambda t: tampered(t, lambda m, mark: _in_program(
        m, "integer=True)", f"integer=True*(open({str(mark)!r}, 'w').write('ran') > 0))"), dynamic=True),
     r"member '.*models/model\.json' of the archive holds a symbolic expression that is Python code"),
    ("export: a tree spec that imports a module", lambda t: tampered(t, _module_import),
     r"member '.*models/model\.json' of the archive names a Python module to import"),
    ("export: a program that calls a Python function", lambda t: tampered(t, _calls_python),
     r"model 'export:.*bad\.pt2': '.*bad\.pt2' is not a torch\.export program \(Operator .*system.* is not an "
     r"allowed operator type"),
    ("export: an output shape that is not what it returns", lambda t: tampered(t, _states_seven_outputs, channels=5),
     r"model 'export:.*bad\.pt2': the file states 7 output channels, but a forward pass of a 2 x 3 x 8 x 8 image "
     r"returns 5$"),
    ("class map naming no output", lambda t: ["eval", *TINY, "eval.class_map.7=sky",
                                              f"models=[{fixed(t)}]"],
     r"eval\.class_map: '7' is not a class of the suite nor of any of its models"),
]


@pytest.mark.parametrize(("setup", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_an_exported_files_mistake_is_one_line_exit_2_and_leaves_nothing(cli, capsys, tmp_path, mlflow_uri,
                                                                         monkeypatch, setup, pattern):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    args = setup(tmp_path)
    capsys.readouterr()
    before = snapshot(tmp_path)

    code, out, err = cli(*args)

    assert_refused(code, out, err, pattern)
    assert snapshot(tmp_path) == before
    assert not list(tmp_path.rglob("*.partial")) and not (tmp_path / "outputs").exists()
    assert store_runs(mlflow_uri) == []
    assert not (tmp_path / "MARKER").exists()  # no payload of a crafted file ran
