"""Pretrained weights keep the normalisation they were trained with (issue 24): backbone files get their backbone's
timm ``pretrained_cfg`` statistics, a suite can state any other per model or per backbone, a segbench checkpoint
folder keeps the one it records; checked on the tensor the backbone receives, through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from segbench.data.base import IMAGENET_MEAN, IMAGENET_STD

BACKBONE = "tf_efficientnet_lite0"  # timm's pretrained_cfg: mean 0.5, std 0.5 (TensorFlow's inputs in [-1, 1])
MODEL = f"unet-{BACKBONE}"
SMALL = [f"models=[{MODEL}]", "data.val_samples=4", "eval.batch_size=4", "bench.enabled=false", "progress=false",
         "tracking.enabled=false"]
NO_TRAINING = ["train.enabled=false", *SMALL]
DOCS = Path(__file__).resolve().parent.parent / "docs" / "models.md"


def backbone_state(seed: int = 0) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(BACKBONE, pretrained=False).state_dict()


@pytest.fixture
def received(monkeypatch):
    """The tensors the backbone of every model built for a run receives, in order."""
    from segbench.models import factory
    from segbench.models.checkpoints import backbone_of

    seen: list[torch.Tensor] = []
    build = factory._architecture

    def build_and_watch(spec, num_classes):
        model = build(spec, num_classes)
        backbone_of(model).register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
        return model

    monkeypatch.setattr(factory, "_architecture", build_and_watch)
    return seen


def first_batch(overrides: list[str]) -> torch.Tensor:
    """The first evaluation batch as the data set hands it over (ImageNet-normalised)."""
    from segbench.data.registry import build_dataset
    from segbench.pipeline.validation import load_config

    cfg = load_config(overrides)
    data = build_dataset(cfg.data, cfg.data.val_split, cfg.seed)
    return torch.stack([data[i][0] for i in range(cfg.eval.batch_size)])


def pixels_of_the_first_batch(overrides: list[str]) -> torch.Tensor:
    """The first evaluation batch as pixels in [0, 1]."""
    images = first_batch(overrides)
    return images * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)


def expect(pixels: torch.Tensor, mean, std, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return (pixels * (high - low) + low - mean) / std


def origin_of(results: Path) -> dict:
    return json.loads((results / "results.json").read_text())["models"][0]["origin"]


def test_the_timm_pretrained_cfg_of_the_test_backbone_is_not_imagenet():
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(BACKBONE)
    assert (cfg.mean, cfg.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_a_backbone_file_is_fed_its_backbones_timm_statistics(cli, tmp_path, received):
    save_file(backbone_state(), tmp_path / "lite0.safetensors")
    args = [*NO_TRAINING, f"backbone_weights.{BACKBONE}={tmp_path / 'lite0.safetensors'}"]
    code, out, err = cli("run", *args, f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    assert len(received) == 1
    torch.testing.assert_close(received[0], expect(pixels_of_the_first_batch(args), (0.5,) * 3, (0.5,) * 3))
    origin = origin_of(tmp_path / "run")
    assert origin["normalisation"]["mean"] == [0.5] * 3 and origin["normalisation"]["std"] == [0.5] * 3
    assert "timm pretrained_cfg of timm/tf_efficientnet_lite0.in1k" in origin["normalisation"]["origin"]
    note = [line for line in err.splitlines() if "are fed mean" in line]
    assert len(note) == 1 and f"normalisation.{BACKBONE}" in note[0]


@pytest.mark.parametrize("key", [BACKBONE, MODEL])
def test_an_explicit_setting_overrides_the_default(cli, tmp_path, received, key):
    save_file(backbone_state(), tmp_path / "lite0.safetensors")
    args = [*NO_TRAINING, f"backbone_weights.{BACKBONE}={tmp_path / 'lite0.safetensors'}",
            f"normalisation.{key}={{mean: [0.1, 0.2, 0.3], std: [0.4, 0.5, 0.6], input_range: [-1, 1]}}"]
    code, _, err = cli("run", *args, f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    torch.testing.assert_close(received[0], expect(pixels_of_the_first_batch(args), (0.1, 0.2, 0.3),
                                                   (0.4, 0.5, 0.6), -1.0, 1.0))
    recorded = origin_of(tmp_path / "run")["normalisation"]
    assert recorded["input_range"] == [-1.0, 1.0] and recorded["origin"] == f"normalisation.{key}"


def test_imagenet_preset_feeds_segbenchs_data_unchanged(cli, tmp_path, received):
    save_file(backbone_state(), tmp_path / "lite0.safetensors")
    args = [*NO_TRAINING, f"backbone_weights.{BACKBONE}={tmp_path / 'lite0.safetensors'}",
            f"normalisation.{BACKBONE}=imagenet"]
    code, _, err = cli("run", *args, f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    torch.testing.assert_close(received[0], first_batch(args), rtol=0, atol=0)


def test_a_checkpoint_folder_keeps_its_own_normalisation(cli, tmp_path, received):
    save_file(backbone_state(), tmp_path / "lite0.safetensors")
    train = ["train.iters=1", "train.batch_size=2", "data.train_samples=2", *SMALL,
             f"backbone_weights.{BACKBONE}={tmp_path / 'lite0.safetensors'}"]
    code, _, err = cli("run", *train, f"output_dir={tmp_path / 'train'}")
    assert code == 0, err
    folder = tmp_path / "train" / "checkpoints" / MODEL
    assert json.loads((folder / "segbench.json").read_text())["normalisation"]["mean"] == [0.5] * 3
    received.clear()
    args = [*NO_TRAINING, f"weights.{MODEL}={folder}"]  # no backbone weights: the suite's default is ImageNet
    code, _, err = cli("run", *args, f"output_dir={tmp_path / 'eval'}")
    assert code == 0, err
    torch.testing.assert_close(received[0], expect(pixels_of_the_first_batch(args), (0.5,) * 3, (0.5,) * 3))
    origin = origin_of(tmp_path / "eval")["normalisation"]
    assert origin["mean"] == [0.5] * 3 and "segbench.json" in origin["origin"]


def test_a_model_built_here_without_weights_is_left_as_it_is(cli, tmp_path, received):
    args = ["train.enabled=false", "models=[unet-resnet10t]", *SMALL[1:]]
    code, _, err = cli("run", *args, f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    torch.testing.assert_close(received[0], first_batch(args), rtol=0, atol=0)  # not a bit changed
    assert origin_of(tmp_path / "run")["normalisation"]["origin"] == "ImageNet (segbench's data)"


# --- the documented key map loads a real foreign layout --------------------------------------------------------

def original_port_names(model) -> dict[str, str]:
    """timm's efficientnet_lite key -> the key of the original PyTorch port (``_blocks.N._depthwise_conv``, blocks
    numbered flat, batch norms numbered within a block), written from timm's module types."""
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

    names: dict[str, str] = {}
    flat = 0
    layers = {DepthwiseSeparableConv: {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv",
                                       "bn2": "_bn2"},
              InvertedResidual: {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv",
                                 "bn2": "_bn1", "conv_pwl": "_project_conv", "bn3": "_bn2"}}
    for s, stage in enumerate(model.blocks):
        for b, block in enumerate(stage):
            for key in block.state_dict():
                layer, _, rest = key.partition(".")
                names[f"blocks.{s}.{b}.{key}"] = f"_blocks.{flat}.{layers[type(block)][layer]}.{rest}"
            flat += 1
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
    for key in model.state_dict():
        layer, _, rest = key.partition(".")
        if layer in top:
            names[key] = f"{top[layer]}.{rest}"
    return names


def documented_key_map() -> dict[str, str]:
    """The key map of docs/models.md's example, as a suite file states it."""
    import yaml

    block = re.search(r"```yaml\n(backbone_key_map:.*?)```", DOCS.read_text(), re.S).group(1)
    return yaml.safe_load(block)["backbone_key_map"][BACKBONE]


def test_the_documented_key_map_loads_the_original_port_completely():
    import timm

    from segbench.models import factory
    from segbench.models.checkpoints import backbone_of, match_backbone

    source = timm.create_model(BACKBONE, pretrained=False)
    torch.manual_seed(3)
    source.load_state_dict({k: torch.randn_like(v) if v.is_floating_point() else v
                            for k, v in source.state_dict().items()})
    names = original_port_names(source)
    assert len(names) == len(source.state_dict())
    foreign = {names[k]: v for k, v in source.state_dict().items()}
    assert any(k.startswith("_blocks.15._depthwise_conv") for k in foreign)
    model = factory.build(MODEL, 3, "random").module
    matched, coverage = match_backbone(backbone_of(model), foreign, "lite0.pth", BACKBONE, documented_key_map())
    backbone = backbone_of(model).state_dict()
    expected_total = len([k for k in backbone if not k.endswith("num_batches_tracked")])
    assert (coverage["loaded"], coverage["total"], coverage["coverage"]) == (expected_total, expected_total, 1.0)
    assert expected_total == 240  # the figure docs/models.md quotes
    for key, value in matched.items():  # each tensor lands where timm has it
        torch.testing.assert_close(value, source.state_dict()[key], rtol=0, atol=0)


def test_the_old_documented_key_map_fits_one_tensor():
    """The example the docs showed before: refused, as a user who copied it was."""
    import timm

    from segbench.errors import UserError
    from segbench.models import factory
    from segbench.models.checkpoints import backbone_of, match_backbone

    source = timm.create_model(BACKBONE, pretrained=False)
    names = original_port_names(source)
    foreign = {names[k]: v for k, v in source.state_dict().items()}
    with pytest.raises(UserError, match=r"fits 1 of the backbone's \d+ tensors"):
        match_backbone(backbone_of(factory.build(MODEL, 3, "random").module), foreign, "lite0.pth", BACKBONE,
                       {r"^_blocks\.": "blocks.", "^_conv_stem": "conv_stem"})
