"""The registries: names, suggestions, and that every listed architecture really builds."""

import pytest
import torch

from segbench.core.registry import Registry
from segbench.errors import UserError
from segbench.models import factory
from segbench.models.archs import ARCHITECTURES
from segbench.models.registry import check_backbone, parse_spec
from segbench.train.losses import LOSSES

SMP_ARCHS = ["unet", "unetplusplus", "fpn", "pspnet", "deeplabv3", "deeplabv3plus", "linknet", "manet", "pan",
             "upernet", "segformer", "dpt"]


def test_registry_rejects_duplicates_and_suggests():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1)
    with pytest.raises(ValueError):
        reg.register("alpha", 2)
    with pytest.raises(UserError, match="unknown widget 'alpah'; did you mean 'alpha'"):
        reg.get("alpah")


def test_every_smp_architecture_is_registered():
    assert set(SMP_ARCHS) <= set(ARCHITECTURES.names())
    assert {"ce", "focal", "dice"} <= set(LOSSES.names())


def test_aliases_and_timm_names():
    assert parse_spec("unet-r18").backbone == "resnet18"
    assert check_backbone("r50") == "resnet50"
    assert check_backbone("efficientnet_b0") == "efficientnet_b0"


@pytest.mark.parametrize("arch", [a for a in SMP_ARCHS if a != "dpt"])
def test_smp_architectures_build_on_a_timm_backbone_and_keep_the_input_size(arch):
    torch.manual_seed(0)
    model = factory.build(f"{arch}-resnet10t", 5, "random").module.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 160))
    assert out.shape == (1, 5, 128, 160)


def test_dpt_builds_on_a_vision_transformer():
    model = factory.build("dpt-vit_tiny_patch16_224", 3, "random").module.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 3, 224, 224)


def test_random_init_never_downloads(monkeypatch):
    import timm

    calls = []
    real = timm.create_model

    def spy(*args, **kwargs):
        calls.append(kwargs.get("pretrained"))
        return real(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    factory.build("unet-resnet10t", 2, "random")
    assert calls and not any(calls)


def test_list_commands(cli):
    code, out, _ = cli("list", "models")
    assert code == 0
    assert all(name in out for name in SMP_ARCHS)
    code, out, _ = cli("list", "backbones", "resnet1*")
    assert code == 0 and "resnet18" in out and "alias r18" in out and "convnext" not in out
    expected_entries = [("losses", "focal"), ("metrics", "mIoU"), ("suites", "synthetic"), ("datasets", "synthetic")]
    for kind, expected in expected_entries:
        code, out, _ = cli("list", kind)
        assert code == 0 and expected in out
    code, _, err = cli("list", "modles")
    assert code == 2 and "did you mean 'models'" in err


def test_models_built_here_load_unwrapped_and_identical_to_random_ones():
    from segbench.models import factory

    torch.manual_seed(0)
    plain = factory.build("pspnet-resnet10t", 3, "random").module.eval()
    torch.manual_seed(0)
    built = factory.build("pspnet-resnet10t", ("a", "b", "c"))
    assert type(built.module) is type(plain) and built.normalisation.is_imagenet and built.mapping is None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(built.module.eval()(x), plain(x))
    assert built.record()["source"] == "segbench" and built.record()["weights"] == {"kind": "random"}


def test_external_names_parse_and_are_not_built_at_random():
    spec = parse_spec("torchvision:fcn_resnet50", check=True)
    assert (spec.source, spec.arch, spec.backbone, spec.external) == ("torchvision", "fcn_resnet50", "", True)
    assert not parse_spec("unet-r18").external
    with pytest.raises(UserError, match="published model.*mode=.load."):
        factory.build(spec, 21, "random")


def test_list_backbones_takes_a_part_of_a_name_or_a_pattern(cli):
    import timm

    code, out, _ = cli("list", "backbones", "lite")
    listed = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and listed == [n for n in timm.list_models() if "lite" in n] and "efficientnet_lite0" in listed
    code, out, _ = cli("list", "backbones", "resnet1*")
    assert [line.split()[0] for line in out.splitlines()] == timm.list_models("resnet1*")
