"""segbench's own architectures: FCN-32s/16s/8s, ParseNet, DeepLab v1 and v2 on three timm backbone families."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segbench.errors import UserError
from segbench.models import factory
from segbench.models.archs import ARCHITECTURES
from segbench.models.archs.fcn import BilinearUpsample, bilinear_kernel
from segbench.models.archs.parsenet import L2Norm

OWN = ["fcn32s", "fcn16s", "fcn8s", "parsenet", "deeplabv1", "deeplabv2"]
# A ResNet, a MobileNet and a ConvNeXt: all three dilate through timm's output_stride.
BACKBONES = ["resnet10t", "mobilenetv3_small_050", "convnext_atto"]


def test_own_architectures_are_registered_as_segbench():
    for name in OWN:
        arch = ARCHITECTURES.get(name)
        assert arch.source == "segbench" and arch.description


def test_listing_the_registry_does_not_import_torch():
    code = "import sys, segbench.models.archs as a; assert 'fcn8s' in a.ARCHITECTURES; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("arch", OWN)
def test_builds_keeps_odd_input_size_and_trains_every_parameter(arch, backbone):
    torch.manual_seed(0)
    model = factory.build(f"{arch}-{backbone}", 5, "random").module.train()
    x = torch.randn(2, 3, 75, 100)  # not a multiple of 32 either way
    out = model(x)
    assert out.shape == (2, 5, 75, 100)
    out.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.requires_grad
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("size", [(64, 80), (33, 47), (96, 65)])
def test_fcn8s_keeps_other_sizes_in_eval(size):
    model = factory.build("fcn8s-convnext_atto", 3, "random").module.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 3, *size)


@pytest.mark.parametrize("factor", [2, 8, 16, 32])
def test_learned_upsampling_starts_as_bilinear_interpolation(factor):
    up = BilinearUpsample(3, factor)
    x = torch.randn(2, 3, 4, 5)
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up(x, (4 * factor, 5 * factor)), expected, atol=1e-5, rtol=1e-5)
    # A constant map stays constant, edges included, whether the output is cropped or extended.
    for size in [(3 * factor - 5, 5 * factor - 1), (6 * factor + 3, 7 * factor)]:
        out = up(torch.full((1, 3, 4, 5), 2.5), size)
        assert out.shape[-2:] == size
        torch.testing.assert_close(out, torch.full_like(out, 2.5))


@pytest.mark.parametrize("arch,factors", [("fcn32s", [32]), ("fcn16s", [2, 16]), ("fcn8s", [2, 2, 8])])
def test_fcn_fuses_the_paper_strides_with_bilinear_transposed_convs(arch, factors):
    model = factory.build(f"{arch}-resnet10t", 4, "random").module
    reductions = model.encoder.model.feature_info.reduction()
    assert [reductions[i] for i in model.encoder.indices] == [32, 16, 8][: len(factors)]
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert sorted(up.stride[0] for up in ups) == sorted(factors)
    for up in ups:
        torch.testing.assert_close(up.weight, bilinear_kernel(up.stride[0]).expand_as(up.weight))
    for score in model.skip_scores:  # the paper's staged training: skips start at zero
        assert not score.weight.any()


def test_l2norm_gives_unit_vectors_times_a_learned_per_channel_scale():
    norm = L2Norm(4, scale=10.0)
    x = torch.randn(2, 4, 3, 5) * 7
    out = norm(x)
    torch.testing.assert_close(out.norm(dim=1), torch.full((2, 3, 5), 10.0))
    with torch.no_grad():
        norm.scale.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    expected = x / x.norm(dim=1, keepdim=True) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, -1, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    norm(x).sum().backward()
    assert norm.scale.grad is not None and norm.scale.grad.abs().sum() > 0


def test_parsenet_concatenates_normalised_local_features_with_unpooled_global_context():
    model = factory.build("parsenet-resnet10t", 3, "random").module.eval()
    seen = {}
    model.classifier.register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0]))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 80))
    assert out.shape == (2, 3, 64, 80)
    x = seen["x"]
    local, context = x.chunk(2, dim=1)
    assert x.shape[-2:] == (8, 10)  # stride 8
    torch.testing.assert_close(local.norm(dim=1), torch.full((2, 8, 10), 10.0))
    torch.testing.assert_close(context, context[..., :1, :1].expand_as(context))  # the same everywhere
    torch.testing.assert_close(context.norm(dim=1), torch.full((2, 8, 10), 10.0))


def test_deeplabv2_sums_four_atrous_branches_at_rates_6_12_18_24():
    model = factory.build("deeplabv2-resnet10t", 3, "random").module.eval()
    branches = model.head.branches
    assert [b.dilation for b in branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    assert all(b.kernel_size == (3, 3) and b.padding == b.dilation and b.out_channels == 3 for b in branches)
    with torch.no_grad():
        (features,) = model.encoder(torch.randn(1, 3, 64, 80))
        torch.testing.assert_close(model.head(features), sum(b(features) for b in branches))


def test_deeplabv1_is_large_fov_on_a_stride_8_backbone():
    model = factory.build("deeplabv1-resnet10t", 3, "random").module.eval()
    assert model.head.fc6.dilation == (12, 12) and model.head.fc6.kernel_size == (3, 3)
    with torch.no_grad():
        (features,) = model.encoder(torch.randn(1, 3, 75, 100))
    assert features.shape[-2:] == (10, 13)  # ceil(75 / 8), ceil(100 / 8)


@pytest.mark.parametrize("arch", ["deeplabv1", "deeplabv2", "parsenet"])
@pytest.mark.parametrize("output_stride,size", [(16, (5, 7)), (32, (3, 4))])
def test_output_stride_16_and_32(arch, output_stride, size):
    from importlib import import_module

    module = import_module(f"segbench.models.archs.{'parsenet' if arch == 'parsenet' else 'deeplab'}")
    model = getattr(module, arch)("resnet10t", 2, output_stride=output_stride).eval()
    with torch.no_grad():
        (features,) = model.encoder(torch.randn(1, 3, 75, 100))
        assert model(torch.randn(1, 3, 75, 100)).shape == (1, 2, 75, 100)
    assert features.shape[-2:] == size


@pytest.mark.parametrize("backbone", ["ghostnet_100", "densenet121"])
@pytest.mark.parametrize("arch", ["deeplabv1", "deeplabv2", "parsenet"])
def test_a_backbone_that_cannot_dilate_fails_with_one_clear_line(arch, backbone):
    with pytest.raises(UserError) as info:
        factory.build(f"{arch}-{backbone}", 3, "random")
    message = str(info.value)
    assert f"backbone '{backbone}' cannot run at output stride 8" in message
    assert "\n" not in message


def test_unsupported_output_stride_and_missing_strides_are_user_errors():
    with pytest.raises(UserError, match="output_stride must be 8, 16 or 32, got 4"):
        from segbench.models.archs.deeplab import deeplabv1

        deeplabv1("resnet10t", 3, output_stride=4)
    with pytest.raises(UserError, match="has no stride-32 features"):
        factory.build("fcn32s-vit_tiny_patch16_224", 3, "random")


def test_local_backbone_weights_load_into_the_encoder(tmp_path):
    import timm
    from safetensors.torch import save_file

    from segbench.models.checkpoints import load_backbone_weights

    torch.manual_seed(1)
    source = timm.create_model("resnet10t", pretrained=False)
    save_file(source.state_dict(), tmp_path / "resnet10t.safetensors")
    model = factory.build("deeplabv1-resnet10t", 3, "random").module
    loaded = load_backbone_weights(model, tmp_path / "resnet10t.safetensors", "resnet10t")
    torch.testing.assert_close(model.encoder.model.state_dict()["conv1.0.weight"], source.conv1[0].weight)
    backbone_tensors = [k for k in model.encoder.model.state_dict() if not k.endswith("num_batches_tracked")]
    assert (loaded["loaded"], loaded["total"], loaded["coverage"]) == (len(backbone_tensors),) * 2 + (1.0,)
