"""Published models (torchvision:, hf:, smp:): checkpoints built here in each upstream format, with random weights.

segbench's logits must equal the upstream library's own forward plus its documented post-processing;
classes are matched by name (or refused, naming them); nothing reaches for the network.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segbench.data.layouts.voc import CLASSES as VOC
from segbench.data.registry import IMAGENET_MEAN, IMAGENET_STD
from segbench.errors import UserError
from segbench.models import factory
from segbench.models.labelspace import ClassSelect, canonical, match_classes
from segbench.models.normalisation import Normalisation, Renormalise
from segbench.models.registry import parse_spec

transformers = pytest.importorskip("transformers")


def pixels(n=2, height=64, width=96, seed=0):
    """Images in [0, 1] and the same images as segbench's data sets hand them over (ImageNet-normalised)."""
    torch.manual_seed(seed)
    raw = torch.rand(n, 3, height, width)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return raw, (raw - mean) / std


def torchvision_checkpoint(path, name="lraspp_mobilenet_v3_large", num_classes=21, aux=False):
    from torchvision.models import get_model_builder

    torch.manual_seed(0)
    extra = {"aux_loss": True} if aux else {}
    net = get_model_builder(name)(weights=None, weights_backbone=None, num_classes=num_classes, **extra).eval()
    torch.save(net.state_dict(), path)
    return net


def segformer_folder(folder, labels, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                             num_attention_heads=[1, 1], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=16, id2label=dict(enumerate(labels)),
                             label2id={n: i for i, n in enumerate(labels)})
    net = SegformerForSemanticSegmentation(config).eval()
    net.save_pretrained(folder)
    processor = SegformerImageProcessor(image_mean=list(mean), image_std=list(std), do_resize=False)
    processor.save_pretrained(folder)
    return net, processor


def smp_folder(folder, classes=3):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    net = smp.Unet(encoder_name="tu-resnet10t", encoder_weights=None, classes=classes).eval()
    net.save_pretrained(str(folder))
    return net


# --- torchvision --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,aux", [("lraspp_mobilenet_v3_large", False), ("deeplabv3_mobilenet_v3_large", True)])
def test_torchvision_state_dict_gives_the_out_head(tmp_path, name, aux):
    net = torchvision_checkpoint(tmp_path / "w.pth", name, aux=aux)
    built = factory.build(f"torchvision:{name}", VOC, weights=str(tmp_path / "w.pth"))
    _, images = pixels()
    with torch.no_grad():
        expected = net(images)["out"]
        got = built.module.eval()(images)
    assert torch.equal(got, expected)  # ImageNet normalisation: nothing in between, bit-identical
    assert built.mapping.names_from == "suite" and "carries no class names" in built.notes[0]
    record = built.record()
    assert record["source"] == "torchvision" and record["weights"]["kind"] == "local"
    assert record["normalisation"]["mean"] == list(IMAGENET_MEAN)


def test_torchvision_published_weights_from_the_cache_carry_their_categories(tmp_path, monkeypatch):
    from segbench.models.sources.tv import cached_file

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    path = cached_file("lraspp_mobilenet_v3_large")
    path.parent.mkdir(parents=True)
    net = torchvision_checkpoint(path)
    built = factory.build("torchvision:lraspp_mobilenet_v3_large", VOC)
    assert built.mapping.names_from == "model" and built.mapping.identity  # __background__ = background
    assert built.mapping.model_classes[0] == "__background__"
    assert built.weights["kind"] == "published" and "COCO_WITH_VOC_LABELS_V1" in built.weights["weights"]
    _, images = pixels()
    with torch.no_grad():
        assert torch.equal(built.module.eval()(images), net(images)["out"])


def test_torchvision_missing_weights_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError) as err:
        factory.build("torchvision:deeplabv3_resnet50", VOC, "plan")
    message = str(err.value)
    assert "\n" not in message
    assert "DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth" in message
    assert "download=true" in message and "weights.torchvision:deeplabv3_resnet50=FILE" in message


def test_wrong_format_files_are_refused(tmp_path):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="is not a checkpoint file"):
        factory.build("torchvision:lraspp_mobilenet_v3_large", VOC, "plan", weights=str(tmp_path / "notes.pth"))
    smp_folder(tmp_path / "smp")  # a real checkpoint, of another library
    with pytest.raises(UserError, match="not a state dict of torchvision's lraspp_mobilenet_v3_large"):
        factory.build("torchvision:lraspp_mobilenet_v3_large", VOC, "plan", weights=str(tmp_path / "smp"))
    with pytest.raises(UserError, match="segmentation-models-pytorch folder; name it smp:"):
        parse_spec(f"hf:{tmp_path / 'smp'}", check=True)
    segformer_folder(tmp_path / "hf", ["a", "b"])
    with pytest.raises(UserError, match="transformers folder: name it hf:"):
        parse_spec(f"smp:{tmp_path / 'hf'}", check=True)
    with pytest.raises(UserError, match="folder .* does not exist"):
        parse_spec(f"hf:{tmp_path / 'nope'}", check=True)
    with pytest.raises(UserError, match="unknown torchvision model 'deeplabv3_resnet5'; did you mean"):
        parse_spec("torchvision:deeplabv3_resnet5", check=True)
    with pytest.raises(UserError, match="unknown model source 'torchvison'; did you mean 'torchvision:'"):
        parse_spec("torchvison:fcn_resnet50")


def test_hub_id_not_in_the_cache_is_refused_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(UserError) as err:
        parse_spec("hf:nvidia/segformer-b0-finetuned-ade-512-512", check=True)
    assert "not in the Hugging Face cache" in str(err.value) and "download=true" in str(err.value)


# --- transformers -------------------------------------------------------------------------------------------

def test_segformer_matches_transformers_forward_and_post_processing(tmp_path):
    net, processor = segformer_folder(tmp_path / "segformer", ["__background__", "Cat", "dog"])
    suite = ("dog", "background", "cat")
    built = factory.build(f"hf:{tmp_path / 'segformer'}", suite)
    assert built.normalisation.mean == (0.5, 0.5, 0.5) and built.mapping.channels == (2, 0, 1)
    raw, images = pixels()
    uint8 = (raw * 255).round().to(torch.uint8)
    raw, images = uint8.float() / 255, (uint8.float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    inputs = processor(images=list(uint8.permute(0, 2, 3, 1).numpy()), return_tensors="pt")
    with torch.no_grad():
        outputs = net(pixel_values=inputs["pixel_values"])
        upstream = F.interpolate(outputs.logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        got = built.module.eval()(images)
    assert got.shape == (2, 3, 64, 96)
    torch.testing.assert_close(got, upstream[:, [2, 0, 1]], atol=1e-5, rtol=0)
    labels = processor.post_process_semantic_segmentation(outputs, target_sizes=[(64, 96)] * 2)
    to_suite = torch.tensor([1, 2, 0])  # model class j is suite class to_suite[j]
    assert torch.equal(got.argmax(1), torch.stack([to_suite[m] for m in labels]))


def test_an_external_model_fine_tunes_with_plain_logits(tmp_path):
    segformer_folder(tmp_path / "segformer", ["background", "cat", "dog"])
    built = factory.build(f"hf:{tmp_path / 'segformer'}", ("background", "cat", "dog"))
    model = built.module.train()
    _, images = pixels(height=32, width=32)
    logits = model(images)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3, 32, 32)
    loss = F.cross_entropy(logits, torch.randint(0, 3, (2, 32, 32)))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(k.startswith("net.") for k in model.state_dict())


def test_hf_folder_without_preprocessor_config_takes_imagenet(tmp_path):
    segformer_folder(tmp_path / "s", ["background", "cat"])
    (tmp_path / "s" / "preprocessor_config.json").unlink()
    plan = factory.build(f"hf:{tmp_path / 's'}", ("background", "cat"), "plan")
    assert plan.normalisation.is_imagenet and "no preprocessor_config.json" in plan.normalisation.origin


# --- segmentation-models-pytorch ----------------------------------------------------------------------------

def test_smp_save_pretrained_folder_matches_smp(tmp_path):
    net = smp_folder(tmp_path / "unet", classes=3)
    built = factory.build(f"smp:{tmp_path / 'unet'}", ("sky", "ground", "pole"))
    _, images = pixels()
    with torch.no_grad():
        assert torch.equal(built.module.eval()(images), net(images))
    assert built.record()["label_mapping"]["names_from"] == "suite"
    with pytest.raises(UserError, match="carries no class names and has 3 outputs, but the suite has 2 classes"):
        factory.build(f"smp:{tmp_path / 'unet'}", ("sky", "ground"), "plan")


def test_smp_folder_with_class_names_is_matched(tmp_path):
    smp_folder(tmp_path / "unet", classes=3)
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    (tmp_path / "unet" / "config.json").write_text(json.dumps(config | {"class_names": ["a", "b", "c"]}))
    assert factory.build(f"smp:{tmp_path / 'unet'}", ("c", "a", "b"), "plan").mapping.channels == (2, 0, 1)


# --- normalisation and label spaces -------------------------------------------------------------------------

def test_renormalise_is_exact():
    raw, images = pixels()
    target = Normalisation((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), 255.0, "test")
    expected = (raw * 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(
        1, 3, 1, 1)
    torch.testing.assert_close(Renormalise(target)(images), expected, atol=1e-4, rtol=1e-6)
    assert Normalisation().is_imagenet and not target.is_imagenet


def test_spelling_variants_match():
    assert canonical("__background__") == canonical("Background") == "background"
    assert canonical("dining table") == canonical("dining-table") == canonical("DiningTable") == "diningtable"
    mapping = match_classes(["__background__", "Dining Table", "potted_plant"], ["pottedplant", "background",
                                                                              "diningtable"], None, "m")
    assert mapping.channels == (2, 0, 1)


def test_mismatch_is_refused_listing_names_unless_mapped():
    with pytest.raises(UserError) as err:
        match_classes(["background", "car", "truck"], ["background", "vehicle", "person"], None, "hf:x")
    message = str(err.value)
    assert "model classes not in the suite: 'car', 'truck'" in message
    assert "suite classes the model lacks: 'vehicle', 'person'" in message and "eval.class_map" in message
    mapping = match_classes(["background", "car", "truck"], ["background", "vehicle", "person"],
                            {"car": "vehicle", "truck": None, "person": None}, "hf:x")
    assert mapping.channels == (0, 1, None)
    assert mapping.unpredictable == ["person"] and mapping.dropped == ["truck"]
    logits = torch.randn(2, 3, 4, 4)
    out = ClassSelect(mapping)(logits)
    assert torch.equal(out[:, :2], logits[:, :2]) and torch.isneginf(out[:, 2]).all()
    assert not (out.argmax(1) == 2).any()  # a class the model cannot predict is never predicted
    with pytest.raises(UserError, match="both map to suite class 'vehicle'"):
        match_classes(["car", "truck"], ["vehicle"], {"car": "vehicle", "truck": "vehicle"}, "m")
    with pytest.raises(UserError, match="'vehicel' is not a class of the suite; did you mean 'vehicle'"):
        match_classes(["car"], ["vehicle"], {"car": "vehicel"}, "m")


def test_segbench_label_spaces_have_no_spelling_collisions():
    from segbench.data.layouts.ade20k import CLASSES as ADE
    from segbench.data.layouts.cityscapes import CLASSES as CITYSCAPES

    for classes in (VOC, ADE, CITYSCAPES):
        assert len({canonical(c) for c in classes}) == len(classes)


# --- config time, CLI and the whole evaluation ---------------------------------------------------------------

def test_config_refuses_mismatched_classes_and_unknown_class_map_keys(tmp_path):
    from segbench.pipeline.validation import load_config

    segformer_folder(tmp_path / "s", ["background", "cat", "dog"])
    model = f"models=[hf:{tmp_path / 's'}]"
    with pytest.raises(UserError, match="its classes do not match the suite's by name"):
        load_config([model, "train.enabled=false"])
    mapped = ["eval.class_map.background=sky", "eval.class_map.cat=ball", "eval.class_map.dog=null",
              *[f"eval.class_map.{c}=null" for c in ("ground", "building", "pole", "cloud", "puddle")]]
    cfg = load_config([model, "train.enabled=false", *mapped])
    assert cfg.eval.class_map["dog"] is None
    with pytest.raises(UserError, match="eval.class_map: 'skyy' is not a class of the suite nor of any"):
        load_config(["models=[unet-resnet10t]", "eval.class_map.skyy=sky"])


def test_weights_key_with_a_colon_works_in_overrides(tmp_path):
    from segbench.pipeline.validation import load_config

    torchvision_checkpoint(tmp_path / "w.pth", num_classes=7)
    cfg = load_config(["models=[torchvision:lraspp_mobilenet_v3_large]", "train.enabled=false",
                       f"weights.torchvision:lraspp_mobilenet_v3_large={tmp_path / 'w.pth'}"])
    assert cfg.weights == {"torchvision:lraspp_mobilenet_v3_large": str(tmp_path / "w.pth")}


def test_eval_command_refuses_missing_weights_offline_in_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    code, _, err = cli("eval", "models=[torchvision:deeplabv3_resnet50]", "tracking.enabled=false")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not in torch's cache" in err and "download=true" in err


def test_missing_transformers_is_one_clear_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.setitem(sys.modules, "transformers.models.auto.modeling_auto", None)
    with pytest.raises(UserError, match=r"hf: models need the transformers package: pip install 'segbench\[hf\]'"):
        parse_spec("hf:/some/folder", check=True)


def test_list_models_shows_the_sources(cli):
    code, out, _ = cli("list", "models")
    assert code == 0
    assert "torchvision:deeplabv3_resnet50" in out and "hf:" in out and "smp:" in out


@pytest.mark.slow
def test_evaluation_end_to_end_on_voc_gives_1_for_the_models_own_predictions(tmp_path):
    """A VOC tree whose masks are the model's own predictions: mIoU 1.0 through segbench's evaluator, with the
    model's classes in another order and spelling and its own normalisation."""
    from fixtures_layouts import make_voc
    from PIL import Image

    from segbench.data.registry import build_dataset, dataset_info, make_loader
    from segbench.evaluation.loop import evaluate
    from segbench.evaluation.modes import predict_logits
    from segbench.pipeline.validation import load_config

    root = make_voc(tmp_path / "voc")
    spelled = ["__background__" if c == "background" else c.replace("table", " table") for c in VOC]
    segformer_folder(tmp_path / "hf", list(reversed(spelled)), mean=(0.4, 0.5, 0.6), std=(0.3, 0.2, 0.1))
    cfg = load_config(["suite=voc", f"data.root={root}", f"models=[hf:{tmp_path / 'hf'}]", "train.enabled=false",
                       "eval.batch_size=1"])
    info = dataset_info(cfg.data)
    built = factory.build(cfg.models[0], info.classes, class_map=cfg.eval.class_map)
    assert built.mapping.channels == tuple(reversed(range(21)))
    model = built.module.eval()
    masks = root / "VOCdevkit" / "VOC2012" / "SegmentationClass"
    dataset = build_dataset(cfg.data, "val")
    for (image, _), stem in zip(dataset, ["2007_000033", "2007_000042", "2007_000061"]):
        labels = predict_logits(model, image[None], cfg.eval, 21).argmax(1)[0].numpy().astype(np.uint8)
        Image.fromarray(labels).save(masks / f"{stem}.png")
    predicted = build_dataset(cfg.data, "val")
    assert len({int(c) for _, m in predicted for c in m.unique()}) > 1  # not a trivial one-class prediction
    result = evaluate(model, make_loader(predicted, 1, False, 0, "cpu", 0), 21, 255, torch.device("cpu"),
                      cfg.eval, progress=False)
    assert result.confusion.compute().summary()["mIoU"] == 1.0


def test_segbench_eval_of_a_torchvision_state_dict_on_its_own_predictions_scores_1(cli, tmp_path, mlflow_uri):
    """The whole command: `segbench eval` of a torchvision checkpoint on a VOC tree whose masks are that model's
    own predictions (made here with torchvision's forward, `out` head, argmax) gives mIoU 1.0, and records where
    the model came from."""
    from fixtures_layouts import make_voc
    from PIL import Image

    from segbench.data.registry import build_dataset
    from segbench.pipeline.validation import load_config

    root = make_voc(tmp_path / "voc")
    weights = tmp_path / "lraspp.pth"
    net = torchvision_checkpoint(weights)  # random weights, saved as a plain state dict
    with torch.no_grad():  # a head spread wide enough that the random model predicts several classes
        for conv in (net.classifier.low_classifier, net.classifier.high_classifier):
            conv.weight.normal_(0.0, 3.0)
    torch.save(net.state_dict(), weights)
    cfg = load_config(["suite=voc", f"data.root={root}", "models=[unet-resnet10t]", "train.enabled=false"])
    masks, seen = root / "VOCdevkit" / "VOC2012" / "SegmentationClass", set()
    for (image, _), stem in zip(build_dataset(cfg.data, "val"), ["2007_000033", "2007_000042", "2007_000061"]):
        with torch.no_grad():  # ImageNet-normalised by segbench, as torchvision's weights expect
            labels = net(image[None])["out"].argmax(1)[0].numpy().astype(np.uint8)
        Image.fromarray(labels).save(masks / f"{stem}.png")
        seen.update(np.unique(labels).tolist())
    assert len(seen) > 1  # not a trivial one-class prediction
    model = "torchvision:lraspp_mobilenet_v3_large"
    code, _, err = cli("eval", "suite=voc", f"data.root={root}", f"models=[{model}]", f"weights.{model}={weights}",
                       "eval.mode=whole", "eval.batch_size=1", "bench.enabled=false", "progress=false",
                       f"tracking.uri={mlflow_uri}",
                       f"output_dir={tmp_path / 'out'}")
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "results.json").read_text())["models"][0]
    assert record["metrics"]["mIoU"] == 1.0 and record["evaluation"]["images"] == 3
    assert record["origin"]["source"] == "torchvision"
    assert record["origin"]["normalisation"]["mean"] == list(IMAGENET_MEAN)
    assert record["weights"]["model"]["file"] == str(weights)


def test_published_models_are_evaluated_at_the_image_size_without_padding(tmp_path):
    """torchvision's LR-ASPP pools globally: padding a 50x70 image to 64x96 would change every logit. Evaluation
    gives the model the image as its authors do, and the logits equal torchvision's own forward."""
    from segbench.config.schema import EvalConfig
    from segbench.evaluation.modes import predict_logits

    net = torchvision_checkpoint(tmp_path / "lraspp.pth")
    built = factory.build("torchvision:lraspp_mobilenet_v3_large", VOC, weights=str(tmp_path / "lraspp.pth"))
    _, images = pixels(1, 50, 70)
    with torch.no_grad():
        reference = net(images)["out"]
    divisor = built.module.size_divisor
    assert divisor == 1
    torch.testing.assert_close(predict_logits(built.module.eval(), images, EvalConfig(), 21, divisor), reference,
                               rtol=1e-5, atol=1e-5)
    padded = predict_logits(built.module, images, EvalConfig(), 21, 32)
    assert (padded - reference).abs().max() > 1e-3  # what padding to 32 would have done


# --- weights checked before anything exists; uninitialised tensors only when accepted --------------------------

def _segformer_without_classifier(folder):
    from safetensors.torch import load_file, save_file
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                             num_attention_heads=[1, 1], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=16, num_labels=7)
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in state.items() if "classifier" not in k}, folder / "model.safetensors",
              metadata={"format": "pt"})


def test_an_accepted_random_head_is_recorded_and_said(cli, capsys, tmp_path, monkeypatch):
    _segformer_without_classifier(tmp_path / "sf")
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    model = "hf:sf"  # a folder named without '/' (per_class_NAME.csv: a safe name for any model is issue 18's)
    code, out, err = cli("eval", f"models=[{model}]", f"accept_uninitialised=[{model}]", "data.val_samples=2",
                         "eval.batch_size=2", "bench.enabled=false", "progress=false", "tracking.enabled=false",
                         f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    origin = json.loads((tmp_path / "run" / "results.json").read_text())["models"][0]["origin"]
    assert origin["weights"]["uninitialised"] == ["decode_head.classifier.bias", "decode_head.classifier.weight"]
    assert "2 tensors start at random values, as accept_uninitialised allows" in err
    # transformers' progress bars obey segbench's terminal rule: stderr is not a terminal here
    assert "Loading weights" not in err and "\r" not in err


def test_check_model_refuses_a_random_head_without_side_effects(tmp_path):
    from segbench.config.schema import SuiteConfig
    from segbench.errors import UserError
    from segbench.models.suite import check_model

    _segformer_without_classifier(tmp_path / "sf")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    model = f"hf:{tmp_path / 'sf'}"
    cfg = SuiteConfig(models=[model])
    with pytest.raises(UserError, match=r"leave 2 tensors of the model uninitialised"):
        check_model(model, cfg)
    cfg.accept_uninitialised = [model]
    plan = check_model(model, cfg)
    assert plan.weights["uninitialised"] == ["decode_head.classifier.bias", "decode_head.classifier.weight"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_complete_hf_folder_in_transformers_legacy_names_passes_the_check(tmp_path):
    """transformers 5 saves SegFormer under its legacy names (encoder.block...) and renames them on load: the
    check follows transformers' own renaming and finds every tensor filled."""
    from segbench.models.sources.hf import _verify

    segformer_folder(tmp_path / "sf", ["a", "b", "c"])
    assert _verify(tmp_path / "sf", None, "sf") == []
