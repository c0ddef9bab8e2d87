"""Deployment backends: the ONNX export scores what eager scores; skipped backends say why; the parity gate."""

import json

import pytest
import torch

from segbench.deploy.backends import BACKENDS, BackendUnavailable, deploy
from segbench.models import factory

CPU = torch.device("cpu")
# one model: each backend exports it again for the evaluation and for the timing (seconds each); smp's and segbench's
# own architectures are exported in test_onnx_logits_equal_eager and test_a_dynamic_export_serves_other_image_sizes
TINY = ["models=[unet-resnet10t]", "train.iters=4", "train.batch_size=4", "data.image_size=32",
        "data.train_samples=16", "data.val_samples=8", "eval.batch_size=4", "bench.warmup=1", "bench.iters=2",
        "bench.repeats=1", "progress=false", "tracking.enabled=false"]

onnxruntime = pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs onnxruntime (segbench[deploy])")


def trained_like(name: str) -> torch.nn.Module:
    """A model with non-trivial batch-norm statistics (random init leaves them at 0/1)."""
    torch.manual_seed(0)
    model = factory.build(name, 5, "random").module
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 64, 96) * 2 + 0.5)
    return model.eval()


@pytest.mark.slow
def test_onnx_logits_equal_eager():
    model = trained_like("unet-resnet10t")  # smp's U-Net; one of segbench's own below, with dynamic height and width
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        reference = model(images)
    deployed = deploy("onnxruntime", model, images)
    got = deployed(images)
    assert got.shape == reference.shape
    assert (got - reference).abs().max().item() < 1e-4
    single = deployed(images[:1])  # the batch axis is dynamic
    assert (single - reference[:1]).abs().max().item() < 1e-4
    described = deployed.describe()
    assert described["provider"] == "CPUExecutionProvider" and described["precision"] == "fp32"
    assert described["exporter"] == "dynamo" and described["opset"] >= 17
    assert described["input_shape"] == [2, 3, 64, 96] and described["dynamic_axes"] == ["batch"]


@pytest.mark.slow
def test_a_dynamic_export_serves_other_image_sizes():
    model = trained_like("fcn8s-resnet10t")
    deployed = deploy("onnxruntime", model, torch.randn(1, 3, 64, 64), dynamic_spatial=True)
    for images in (torch.randn(2, 3, 64, 64), torch.randn(1, 3, 64, 64), torch.randn(3, 3, 96, 128)):
        with torch.no_grad():
            reference = model(images)
        got = deployed(images)
        assert got.shape == reference.shape and (got - reference).abs().max().item() < 1e-4
    described = deployed.describe()
    assert described["exports"] == 1  # one export served every size
    assert described["exporter"] == "dynamo" and described["dynamic_axes"] == ["batch", "height", "width"]


def test_an_export_that_bakes_the_input_in_is_refused(monkeypatch):
    import segbench.deploy.onnx as backends_onnx

    class Baked(torch.nn.Module):
        def forward(self, x):
            return x * float(x.abs().max())  # tracing turns the scale into a constant of the example

    def dynamo_fails(*args):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(backends_onnx, "_export_dynamo", dynamo_fails)
    with pytest.raises(BackendUnavailable) as caught:
        deploy("onnxruntime", Baked(), torch.randn(1, 3, 8, 8))
    assert caught.value.reason.startswith("ONNX export failed: dynamo: RuntimeError: unsupported operator; "
                                          "torchscript: the export differs from eager by up to")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without CUDA")
def test_tensorrt_without_cuda_is_unavailable_with_its_reason():
    with pytest.raises(BackendUnavailable, match="TensorRT needs a CUDA GPU"):
        deploy("tensorrt", torch.nn.Conv2d(3, 2, 1), torch.randn(1, 3, 8, 8))


def test_onnxruntime_runs_fp32_only():
    with pytest.raises(BackendUnavailable, match="fp32 export only, not fp16"):
        deploy("onnxruntime", torch.nn.Conv2d(3, 2, 1), torch.randn(1, 3, 8, 8), precision="fp16")


def test_the_registry_lists_every_backend():
    assert BACKENDS.names() == ["compile", "eager", "onnxruntime", "tensorrt"]
    assert deploy("compile", torch.nn.Conv2d(3, 2, 1), torch.randn(1, 3, 8, 8)).describe()["backend"] == "compile"


@pytest.mark.skipif(not torch.cuda.is_available() or "CUDAExecutionProvider" not in
                    onnxruntime.get_available_providers(), reason="needs a CUDA GPU and onnxruntime-gpu")
def test_onnxruntime_on_cuda_matches_eager():
    model = trained_like("unet-resnet10t").cuda()
    images = torch.randn(2, 3, 64, 96, device="cuda")
    with torch.no_grad():
        reference = model(images)
    deployed = deploy("onnxruntime", model, images)
    assert deployed.provider == "CUDAExecutionProvider"
    for _ in range(2):  # the first call learns the output shape, the second binds a torch output
        assert (deployed(images) - reference).abs().max().item() < 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and TensorRT")
def test_tensorrt_matches_eager():
    pytest.importorskip("torch_tensorrt" if __import__("importlib").util.find_spec("torch_tensorrt") else "tensorrt")
    model = trained_like("unet-resnet10t").cuda()
    images = torch.randn(2, 3, 64, 96, device="cuda")
    with torch.no_grad():
        reference = model(images)
    assert (deploy("tensorrt", model, images)(images) - reference).abs().max().item() < 1e-2


@pytest.mark.slow
def test_run_records_parity_and_speed_per_backend(cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = cli("run", *TINY, "eval.backends=[eager,onnxruntime,tensorrt]",
                               "bench.backends=[eager,onnxruntime,tensorrt]", f"output_dir={out}")
    assert code == 0, stderr
    results = json.loads((out / "results.json").read_text())
    for record in results["models"]:
        eager, ort, trt = record["evaluation"]["backends"]
        assert eager["backend"] == "eager" and eager["status"] == "reference"
        assert eager["metrics"] == {k: record["metrics"][k] for k in eager["metrics"]}  # the five base metrics
        assert set(eager["metrics"]) == {"mIoU", "mDice", "aAcc", "mAcc", "fwIoU"}
        assert ort["status"] == "ok" and ort["provider"] == "CPUExecutionProvider" and ort["images"] == 8
        assert ort["metrics"]["mIoU"] == pytest.approx(record["metrics"]["mIoU"], abs=1e-12)  # the same mIoU
        for metric, value in ort["metrics"].items():
            assert ort["difference"][metric] == pytest.approx(value - record["metrics"][metric], abs=1e-12)
        assert ort["max_abs_logit_difference"] < 1e-4 and ort["prediction_agreement"] == 1.0
        assert ort["details"]["exporter"] == "dynamo"
        if not torch.cuda.is_available():
            assert trt["status"] == "skipped" and "CUDA" in trt["reason"]
            assert record["speed_skipped"] == [{"backend": "tensorrt", "reason": trt["reason"]}]
        assert [(s["backend"], s["provider"]) for s in record["speed"]][:2] == [
            ("eager", "torch"), ("onnxruntime", "CPUExecutionProvider")]
    assert "backend tensorrt not evaluated" in stderr or torch.cuda.is_available()

    code, gate_out, _ = cli("gate", str(out), str(out), "--max-backend-diff", "mIoU=0.1")
    assert code == 0, gate_out
    assert "mIoU onnxruntime" in gate_out


def test_the_gate_bounds_the_difference_from_eager(tmp_path, images, record, results):
    from segbench.gate.compare import GatePolicy, gate

    def with_backends(diff: float, status: str = "ok") -> dict:
        model = record("unet-r10", *images(20, 0.6))
        eager = model["metrics"]["mIoU"]
        model["evaluation"]["backends"] = [
            {"backend": "eager", "status": "reference", "metrics": {"mIoU": eager}, "difference": {"mIoU": 0.0}},
            {"backend": "onnxruntime", "status": status, "metrics": {"mIoU": eager + diff},
             "difference": {"mIoU": diff}, "reason": "cannot run here" if status == "skipped" else None}]
        return model

    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(results(record("unet-r10", *images(20, 0.6)))))
    checks = {}
    for label, model in (("close", with_backends(0.0005)), ("far", with_backends(-0.002)),
                         ("skipped", with_backends(0.0, "skipped")), ("none", record("unet-r10", *images(20, 0.6)))):
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps(results(model)))
        result = gate(path, baseline, GatePolicy(max_backend_diff_points={"mIoU": 0.1}, max_speed_drop_percent=None))
        parity = result.checks[result.checks["check"].str.contains("onnxruntime|parity")].iloc[0]
        checks[label] = (result.passed, parity["status"], parity["change"])
    assert checks["close"][:2] == (True, "ok") and checks["close"][2] == pytest.approx(0.05)  # points
    assert checks["far"][:2] == (False, "fail") and checks["far"][2] == pytest.approx(-0.2)
    assert checks["skipped"][:2] == (True, "skipped")
    assert checks["none"][:2] == (False, "fail")  # parity asked for, never measured
