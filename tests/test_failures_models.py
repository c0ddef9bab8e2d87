"""The failure table of model sources and weights: every refusal exits 2 with one line naming the thing and what
was expected, before anything exists (no output folder, ``.partial`` or not, no MLflow run, no file changed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from failure_table import assert_refused, snapshot, store_runs
from safetensors.torch import load_file, save_file

pytest.importorskip("transformers")

SUITE_CLASSES = 7  # the default suite's
TINY = ["train.enabled=false", "data.val_samples=2", "eval.batch_size=2", "bench.enabled=false", "progress=false"]


def segformer_folder(folder: Path, num_labels: int = SUITE_CLASSES) -> Path:
    """A tiny SegFormer save_pretrained folder (generic labels: the suite's classes are assumed)."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                             num_attention_heads=[1, 1], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=16, num_labels=num_labels)
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    return folder


def smp_folder(folder: Path, classes: int = SUITE_CLASSES) -> Path:
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    smp.Unet(encoder_name="tu-resnet10t", encoder_weights=None, classes=classes).save_pretrained(str(folder))
    return folder


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _hf_without_classifier(tmp: Path) -> list[str]:
    folder = segformer_folder(tmp / "sf")
    state = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in state.items() if "classifier" not in k}, folder / "model.safetensors",
              metadata={"format": "pt"})
    return ["run", *TINY, f"models=[hf:{folder}]"]


def _hf_wrong_shape(tmp: Path) -> list[str]:
    folder = segformer_folder(tmp / "sf")
    state = load_file(folder / "model.safetensors")
    key = next(k for k in state if k.endswith("classifier.weight"))
    state[key] = torch.zeros(3, *state[key].shape[1:])
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return ["run", *TINY, f"models=[hf:{folder}]"]


def _hf_truncated(tmp: Path) -> list[str]:
    folder = segformer_folder(tmp / "sf")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:40])
    return ["run", *TINY, f"models=[hf:{folder}]"]


def _hf_config_list(tmp: Path) -> list[str]:
    folder = segformer_folder(tmp / "sf")
    (folder / "config.json").write_text("[1, 2]")
    return ["run", *TINY, f"models=[hf:{folder}]"]


def _hf_id2label_words(tmp: Path) -> list[str]:
    folder = segformer_folder(tmp / "sf")
    edit_json(folder / "config.json", lambda c: c | {"id2label": {"sky": "sky", "one": "ground"}})
    return ["run", *TINY, f"models=[hf:{folder}]"]


def _hf_preprocessor_not_json(tmp: Path) -> list[str]:
    folder = segformer_folder(tmp / "sf")
    (folder / "preprocessor_config.json").write_text("image_mean: [0.5, 0.5, 0.5]")
    return ["run", *TINY, f"models=[hf:{folder}]"]


def _hf_zero_std(tmp: Path) -> list[str]:
    folder = segformer_folder(tmp / "sf")
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0, 0, 0]}))
    return ["run", *TINY, f"models=[hf:{folder}]"]


def _smp_unknown_encoder(tmp: Path) -> list[str]:
    folder = smp_folder(tmp / "unet")
    edit_json(folder / "config.json", lambda c: c | {"encoder_name": "resnet10t_nope"})
    return ["run", *TINY, f"models=[smp:{folder}]"]


def _smp_wrong_shape(tmp: Path) -> list[str]:
    folder = smp_folder(tmp / "unet", classes=3)
    edit_json(folder / "config.json", lambda c: c | {"classes": SUITE_CLASSES})
    return ["run", *TINY, f"models=[smp:{folder}]"]


def _torchvision_wrong_shape(tmp: Path) -> list[str]:
    from torchvision.models import get_model_builder

    net = get_model_builder("lraspp_mobilenet_v3_large")(weights=None, weights_backbone=None, num_classes=7)
    state = net.state_dict()
    state["classifier.low_classifier.weight"] = torch.zeros(5, *state["classifier.low_classifier.weight"].shape[1:])
    torch.save(state, tmp / "lraspp.pth")
    return ["run", *TINY, "models=[torchvision:lraspp_mobilenet_v3_large]",
            f"weights.torchvision:lraspp_mobilenet_v3_large={tmp / 'lraspp.pth'}"]


def _torchvision_missing_tensor(tmp: Path) -> list[str]:
    from torchvision.models import get_model_builder

    net = get_model_builder("lraspp_mobilenet_v3_large")(weights=None, weights_backbone=None, num_classes=7)
    state = {k: v for k, v in net.state_dict().items() if k != "classifier.low_classifier.bias"}
    torch.save(state, tmp / "lraspp.pth")
    return ["run", *TINY, "models=[torchvision:lraspp_mobilenet_v3_large]",
            f"weights.torchvision:lraspp_mobilenet_v3_large={tmp / 'lraspp.pth'}"]


def _local_missing_head(tmp: Path) -> list[str]:
    from segbench.models import factory

    state = factory.build("unet-resnet10t", SUITE_CLASSES, "random").module.state_dict()
    save_file({k: v for k, v in state.items() if not k.startswith("segmentation_head")}, tmp / "unet.safetensors")
    return ["run", *TINY, "models=[unet-resnet10t]", f"weights.unet-resnet10t={tmp / 'unet.safetensors'}"]


CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("hf checkpoint without its classifier", _hf_without_classifier,
     r"hf:.*sf: its weights leave 2 tensors of the model uninitialised \(decode_head\.classifier\.bias, "
     r"decode_head\.classifier\.weight\).*accept_uninitialised=\[hf:"),
    ("hf classifier of another shape", _hf_wrong_shape, r"hf:.*do not fit the model: 1 tensors of another shape "
                                                        r"\(decode_head\.classifier\.weight \[3, 16, 1, 1\] vs \[7"),
    ("hf weights truncated", _hf_truncated, r"model\.safetensors' is not a readable safetensors file"),
    ("hf config.json a list", _hf_config_list, r"config\.json' holds a JSON list, expected an object"),
    ("hf id2label keys not integers", _hf_id2label_words, r"id2label key 'sky' is not a channel number"),
    ("hf preprocessor config not JSON", _hf_preprocessor_not_json, r"preprocessor_config\.json' is not valid JSON"),
    ("hf image_std zero", _hf_zero_std,
     r"preprocessor_config\.json of .*: std must be positive .*\[0\.0, 0\.0, 0\.0\]"),
    ("smp unknown encoder", _smp_unknown_encoder,
     r"smp:.*encoder_name 'resnet10t_nope' is not an encoder of segmentation-models-pytorch"),
    ("smp weights of another shape", _smp_wrong_shape, r"smp:.*do not fit the model: 2 tensors of another shape"),
    ("torchvision state dict of another shape", _torchvision_wrong_shape,
     r"torchvision:lraspp_mobilenet_v3_large: the weights .*lraspp\.pth' do not fit the model: 1 tensors of another "
     r"shape \(classifier\.low_classifier\.weight \[5"),
    ("torchvision state dict missing a tensor", _torchvision_missing_tensor,
     r"its weights leave 1 tensors of the model uninitialised \(classifier\.low_classifier\.bias\)"),
    ("local checkpoint without its head", _local_missing_head,
     r"unet-resnet10t: its weights leave 2 tensors .*segmentation_head\.0\.bias.*accept_uninitialised"),
    ("normalisation for no model", lambda t: ["run", *TINY, "models=[unet-resnet10t]", "normalisation.resnet18=timm"],
     r"normalisation\.resnet18: no model of the suite is named 'resnet18' nor uses backbone 'resnet18'"),
    ("normalisation std zero", lambda t: ["run", *TINY, "models=[unet-resnet10t]",
                                          "normalisation.resnet10t={mean: [0.5,0.5,0.5], std: [0.5,0,0.5]}"],
     r"normalisation\.resnet10t: std must be positive"),
    ("normalisation of two channels", lambda t: ["run", *TINY, "models=[unet-resnet10t]",
                                                 "normalisation.unet-resnet10t={mean: [0.5,0.5], std: [1,1,1]}"],
     r"normalisation\.unet-resnet10t: mean must be 3 finite numbers"),
    ("normalisation empty input range", lambda t: ["run", *TINY, "models=[unet-resnet10t]",
                                                   "normalisation.resnet10t={mean: 0, std: 1, input_range: [1, 1]}"],
     r"input_range must be two finite numbers LOW < HIGH"),
    ("normalisation unknown preset", lambda t: ["run", *TINY, "models=[unet-resnet10t]",
                                                "normalisation.resnet10t=clip"],
     r"normalisation\.resnet10t: expected one of imagenet, timm"),
    ("accept_uninitialised for no model", lambda t: ["run", *TINY, "models=[unet-resnet10t]",
                                                     "accept_uninitialised=[fpn-resnet10t]"],
     r"accept_uninitialised: 'fpn-resnet10t' is not a model of the suite"),
]


@pytest.mark.parametrize(("setup", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_models_mistake_is_one_line_exit_2_and_leaves_nothing(cli, capsys, tmp_path, mlflow_uri, monkeypatch,
                                                                setup, pattern):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    args = setup(tmp_path)
    capsys.readouterr()  # what building the test's files printed
    before = snapshot(tmp_path)

    code, out, err = cli(*args)

    assert_refused(code, out, err, pattern)
    assert snapshot(tmp_path) == before
    assert not list(tmp_path.rglob("*.partial")) and not (tmp_path / "outputs").exists()
    assert store_runs(mlflow_uri) == []
