"""Universal-segmentation models (Mask2Former, MaskFormer, OneFormer, EoMT) as ``hf:`` sources: tiny random
checkpoints built offline, evaluated through ``segbench eval``; every reference is computed here from the network's
own outputs with torch and numpy (the published semantic inference), never with segbench's code."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from failure_table import assert_refused

from segbench.data.layouts.synthetic import CLASSES
from segbench.data.registry import IMAGENET_MEAN, IMAGENET_STD

transformers = pytest.importorskip("transformers")

# --- tiny random checkpoints, built offline as transformers' own tests build them, saved with save_pretrained;
# their processors with a non-ImageNet normalisation, and OneFormer's with a CLIP tokenizer of a few letters ---

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
FAMILIES = ("mask2former", "maskformer", "oneformer", "eomt", "eomt_dinov3")
MASK_HEADS = {  # the last layer of each family's mask embedding
    "mask2former": "model.transformer_module.decoder.mask_predictor.mask_embedder.2.0.weight",
    "maskformer": "mask_embedder.2.0.weight",
    "oneformer": "model.transformer_module.decoder.mask_embed.layers.2.0.weight",
    "eomt": "mask_head.fc3.weight",
    "eomt_dinov3": "mask_head.fc3.weight",
}


def _swin():
    from transformers import SwinConfig

    return SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, image_size=64,
                      out_features=["stage1", "stage2", "stage3", "stage4"])


def _tokenizer(folder: Path):
    """A CLIP tokenizer whose vocabulary is the letters of the task words (no merges): enough to tokenize the
    task input."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(set("thetaskissemanticpanopticinstance")):
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def build(family: str, labels):
    """The network of ``family`` with random weights and classes ``labels``, in eval mode."""
    import transformers as t

    torch.manual_seed(0)
    small = dict(num_queries=8, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    if family == "mask2former":
        net = t.Mask2FormerForUniversalSegmentation(t.Mask2FormerConfig(
            backbone_config=_swin(), hidden_dim=32, feature_size=32, mask_feature_size=32, encoder_feedforward_dim=32,
            dim_feedforward=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2, **small))
    elif family == "maskformer":
        decoder = dict(model_type="detr", d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=8)
        net = t.MaskFormerForInstanceSegmentation(t.MaskFormerConfig(
            backbone_config=_swin(), fpn_feature_size=32, mask_feature_size=32, decoder_config=decoder, **small))
    elif family == "oneformer":
        net = t.OneFormerForUniversalSegmentation(t.OneFormerConfig(
            backbone_config=_swin(), hidden_dim=32, conv_dim=32, mask_dim=32, encoder_feedforward_dim=32,
            dim_feedforward=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2, text_encoder_width=32,
            text_encoder_num_layers=1, text_encoder_vocab_size=64, task_seq_len=8, text_encoder_context_length=8,
            **small))
    else:  # EoMT on DINOv2 or DINOv3
        model, config = ((t.EomtForUniversalSegmentation, t.EomtConfig) if family == "eomt" else
                         (t.EomtDinov3ForUniversalSegmentation, t.EomtDinov3Config))
        net = model(config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=48, patch_size=8, num_blocks=1, num_register_tokens=1, **small))
    with torch.no_grad():  # a class head spread wide enough that the random model predicts several classes,
        head = net.model.transformer_module.decoder.class_embed if family == "oneformer" else net.class_predictor
        head.weight.normal_(0.0, 2.0)
        masks = dict(net.named_parameters())[MASK_HEADS[family]]  # and masks that vary across the image
        masks.mul_(30.0)
    return net.eval()


def save(family: str, folder: Path, labels):
    """``build``'s network saved with save_pretrained into ``folder``, with its image processor (OneFormer's
    processor with its tokenizer); the network."""
    import transformers as t

    net = build(family, labels)
    net.save_pretrained(folder)
    kind = {"mask2former": "Mask2Former", "maskformer": "MaskFormer", "oneformer": "OneFormer"}.get(family, "Eomt")
    processor = getattr(t, f"{kind}ImageProcessor")(image_mean=list(MEAN), image_std=list(STD))
    if family == "oneformer":
        tokens = _tokenizer(folder.parent / f"{folder.name}-vocab")
        processor = t.OneFormerProcessor(processor, tokens, task_seq_length=8)
    processor.save_pretrained(folder)
    return net


# --- the published semantic inference, computed here ---------------------------------------------------------

QUICK = ("data.val_samples=6", "eval.batch_size=3", "progress=false", "tracking.enabled=false")


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised images (as segbench's data sets give them) in the folders' own normalisation."""
    imagenet = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    raw = images * imagenet[1] + imagenet[0]
    return (raw - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def scores_of(out, size) -> torch.Tensor:
    """The MaskFormer paper's semantic inference: softmax over K+1 classes without the null class, times the sigmoid
    of the mask logits resized to ``size``, summed over the queries."""
    masks = F.interpolate(out.masks_queries_logits, size=size, mode="bilinear", align_corners=False).sigmoid()
    return torch.einsum("bqc,bqhw->bchw", out.class_queries_logits.softmax(-1)[..., :-1], masks)


def reference_scores(family: str, net, images: torch.Tensor, tokens=None) -> torch.Tensor:
    """N x K x H x W semantic scores of ``net`` on ImageNet-normalised ``images`` whose sides are multiples of 32."""
    x = to_model_input(images)
    size = tuple(images.shape[-2:])
    with torch.no_grad():
        if family.startswith("eomt"):  # one square crop: short side resized to image_size, scores resized back
            side = net.config.image_size
            assert size[0] == size[1]
            crop = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
            scores = scores_of(net(crop), (side, side))
            return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
        out = net(x, tokens.expand(len(x), -1)) if family == "oneformer" else net(x)
        return scores_of(out, size)


def task_tokens(folder) -> torch.Tensor:
    processor = transformers.OneFormerProcessor.from_pretrained(str(folder))
    return processor._preprocess_text(["the task is semantic"], max_length=processor.task_seq_length)


def synthetic_val(n: int):
    from segbench.config.schema import DataConfig
    from segbench.data.registry import build_dataset

    pairs = list(build_dataset(DataConfig(name="synthetic", image_size=64, val_samples=n), "val"))
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def confusion(labels: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    keep = labels != 255
    return np.bincount(labels[keep].astype(np.int64) * k + pred[keep], minlength=k * k).reshape(k, k)


@pytest.mark.parametrize("family", FAMILIES)
def test_segbench_eval_confusion_equals_the_published_semantic_inference(cli, tmp_path, family):
    folder = tmp_path / family
    net = save(family, folder, CLASSES)
    code, _, err = cli("eval", f"models=[hf:{folder}]", *QUICK, "bench.warmup=1", "bench.iters=2",
                       "bench.repeats=1", f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "results.json").read_text())["models"][0]
    images, labels = synthetic_val(6)
    tokens = task_tokens(folder) if family == "oneformer" else None
    scores = reference_scores(family, net, images, tokens)
    pred = scores.argmax(1).numpy()
    assert len(np.unique(pred)) > 1  # not a one-class prediction
    expected = confusion(labels.numpy(), pred, len(CLASSES))
    assert np.array_equal(np.array(record["confusion_matrix"])[:, :len(CLASSES)], expected)
    # the calibration error sees each class's share of the scores: max score / sum of the scores, per pixel
    share = (scores.max(1).values / scores.sum(1)).double().numpy()[labels.numpy() != 255]
    calibration = record["passport"]["calibration"]
    bins = np.minimum((share * calibration["bins"]).astype(int), calibration["bins"] - 1)
    assert np.array_equal(calibration["pixels"], np.bincount(bins, minlength=calibration["bins"]))
    np.testing.assert_allclose(sum(calibration["confidence_sum"]), share.sum(), rtol=1e-5)
    origin = record["origin"]["weights"]
    assert origin["family"] == {"mask2former": "Mask2Former", "maskformer": "MaskFormer", "oneformer": "OneFormer",
                                "eomt": "EoMT", "eomt_dinov3": "EoMT (DINOv3)"}[family]
    assert "sigmoid" in origin["post_processing"] and record["origin"]["normalisation"]["mean"] == list(MEAN)
    assert record["speed"][0]["images_per_second"] > 0 and record["speed"][0]["input_shape"] == [1, 3, 64, 64]


def test_classes_are_matched_by_name_from_id2label(cli, tmp_path):
    """A OneFormer whose id2label lists the suite's classes in reverse order and other spelling: channel i of the
    network is suite class K-1-i."""
    folder = tmp_path / "oneformer"
    spelled = [c.upper() for c in reversed(CLASSES)]
    net = save("oneformer", folder, spelled)
    code, _, err = cli("eval", f"models=[hf:{folder}]", *QUICK, "bench.enabled=false", f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "results.json").read_text())["models"][0]
    assert record["origin"]["label_mapping"]["channels"] == list(reversed(range(len(CLASSES))))
    images, labels = synthetic_val(6)
    pred = len(CLASSES) - 1 - reference_scores("oneformer", net, images, task_tokens(folder)).argmax(1).numpy()
    expected = confusion(labels.numpy(), pred, len(CLASSES))
    assert np.array_equal(np.array(record["confusion_matrix"])[:, :len(CLASSES)], expected)


@pytest.mark.parametrize("family", ["mask2former", "oneformer"])
def test_padding_is_cropped_and_softmax_gives_the_scores_share(tmp_path, family):
    """A 50x70 image is padded to 64x96 for the network (its processors' size divisor 32); the masks go to the
    padded size before the sigmoid and the padding is cropped. The softmax of what segbench returns is the
    scores divided by their sum per pixel: the probabilities the calibration error sees."""
    from segbench.config.schema import EvalConfig
    from segbench.evaluation.modes import predict_logits
    from segbench.models import factory

    folder = tmp_path / family
    net = save(family, folder, CLASSES)
    built = factory.build(f"hf:{folder}", CLASSES)
    torch.manual_seed(0)
    images = torch.randn(2, 3, 50, 70)
    got = predict_logits(built.module.eval(), images, EvalConfig(), len(CLASSES), built.module.size_divisor)
    padded = F.pad(images, (0, 26, 0, 14))
    tokens = task_tokens(folder) if family == "oneformer" else None
    scores = reference_scores(family, net, padded, tokens)[..., :50, :70]
    torch.testing.assert_close(got.softmax(1), scores / scores.sum(1, keepdim=True), rtol=1e-4, atol=1e-6)
    assert torch.equal(got.argmax(1), scores.argmax(1))


def test_eomt_crops_equal_transformers_own_split_and_merge(tmp_path):
    """A 36x48 image: its short side resized to EoMT's 48, two overlapping 48x48 crops along the long side (64);
    segbench's scores equal transformers' post_process_semantic_segmentation of the same crops."""
    from segbench.models import factory

    net = save("eomt", tmp_path / "eomt", CLASSES)
    module = factory.build(f"hf:{tmp_path / 'eomt'}", CLASSES).module.eval()
    torch.manual_seed(0)
    images = torch.randn(1, 3, 36, 48)
    with torch.no_grad():
        got = module(images).exp()
        resized = F.interpolate(to_model_input(images), size=(48, 64), mode="bilinear", align_corners=False)
        crops = [resized[..., :, s:s + 48] for s in (0, 16)]  # ceil(64/48)=2 crops, overlap 32
        out = net(torch.cat(crops))
    out.patch_offsets = [[0, 0, 48], [0, 16, 64]]
    processor = transformers.EomtImageProcessor()
    expected = processor.post_process_semantic_segmentation(
        out, target_sizes=[(36, 48)], size={"shortest_edge": 48, "longest_edge": None},
        return_segmentation_scores=True)[0]["segmentation_scores"]
    torch.testing.assert_close(got[0], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["mask2former", "eomt"])
def test_sliding_window_and_multi_scale_run_on_the_semantic_scores(cli, tmp_path, family):
    folder = tmp_path / family
    save(family, folder, CLASSES)
    code, _, err = cli("eval", f"models=[hf:{folder}]", *QUICK, "bench.enabled=false", "eval.mode=slide",
                       "eval.window=[32,32]", "eval.stride=[16,16]", "eval.scales=[0.75,1.0]", "eval.flip=true",
                       f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "results.json").read_text())["models"][0]
    assert np.array(record["confusion_matrix"]).sum() == 6 * 64 * 64
    assert record["evaluation"]["mode"] == "slide" and 0 <= record["metrics"]["mIoU"] <= 100


def test_flip_averages_the_shares_of_the_scores(cli, tmp_path):
    """Test-time flip averages softmax probabilities: here the scores' shares (scores / their sum per pixel) of the
    image and of its mirror image, computed here."""
    folder = tmp_path / "mask2former"
    net = save("mask2former", folder, CLASSES)
    code, _, err = cli("eval", f"models=[hf:{folder}]", *QUICK, "bench.enabled=false", "eval.flip=true",
                       f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "results.json").read_text())["models"][0]
    images, labels = synthetic_val(6)
    plain = reference_scores("mask2former", net, images)
    mirrored = reference_scores("mask2former", net, images.flip(-1)).flip(-1)
    shares = plain / plain.sum(1, keepdim=True) + mirrored / mirrored.sum(1, keepdim=True)
    expected = confusion(labels.numpy(), shares.argmax(1).numpy(), len(CLASSES))
    assert np.array_equal(np.array(record["confusion_matrix"])[:, :len(CLASSES)], expected)


def test_post_processing_differs_from_transformers_only_in_where_it_resizes(tmp_path):
    """transformers' post_process_semantic_segmentation takes the sigmoid at 384x384 (Mask2Former) or at the
    masks' own quarter resolution (MaskFormer, OneFormer), and resizes the padded map to the target size; segbench
    resizes the mask logits to the padded input size before the sigmoid and crops the padding. The same formula
    otherwise (the shares of pixels that differ are in docs/models.md)."""
    torch.manual_seed(0)
    shares = {}
    for family in ("mask2former", "maskformer", "oneformer"):
        folder = tmp_path / family
        net = save(family, folder, CLASSES)
        tokens = task_tokens(folder) if family == "oneformer" else None
        processor = transformers.AutoImageProcessor.from_pretrained(str(folder))
        for size in ((64, 64), (50, 70)):
            images = torch.randn(4, 3, *size)
            padded = F.pad(images, (0, -size[1] % 32, 0, -size[0] % 32))
            ours = reference_scores(family, net, padded, tokens)[..., :size[0], :size[1]].argmax(1)
            x = to_model_input(padded)
            with torch.no_grad():
                out = net(x, tokens.expand(len(x), -1)) if family == "oneformer" else net(x)
            theirs = torch.stack(processor.post_process_semantic_segmentation(out, target_sizes=[size] * 4))
            shares[family, size] = (ours != theirs).float().mean().item()
    print("share of pixels whose class differs from transformers' post-processing:", shares)
    # without padding only the resize differs: the maps agree on nearly every pixel
    assert all(share < 0.01 for (_, size), share in shares.items() if size == (64, 64)), shares


# --- refused at config time, in one line ---------------------------------------------------------------------

def _without_class_head(folder):
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith("class_predictor")}, folder / "model.safetensors",
              metadata={"format": "pt"})


def _other_classes(folder):
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(i): c for i, c in enumerate(CLASSES[:3])}
    config["label2id"] = {c: i for i, c in enumerate(CLASSES[:3])}
    (folder / "config.json").write_text(json.dumps(config))


def _tokenizer_removed(folder):
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        (folder / name).unlink()


@pytest.mark.parametrize("family, spoil, pattern", [
    ("oneformer", _tokenizer_removed, r"a OneFormer needs its task input 'the task is semantic', tokenized by the "
                                      r"tokenizer saved with its processor, and '.*' has no usable tokenizer"),
    ("maskformer", _without_class_head, r"its weights leave 2 tensors of the model uninitialised "
                                        r"\(class_predictor.bias, class_predictor.weight\)"),
    ("mask2former", _other_classes, r"do not fit the model: 3 tensors of another shape \(class_predictor.bias "
                                    r"\[8\] vs \[4\]"),
])
def test_unusable_checkpoints_are_refused_before_anything_exists(cli, capsys, tmp_path, family, spoil, pattern):
    folder = tmp_path / family
    save(family, folder, CLASSES)
    shutil.rmtree(tmp_path / f"{family}-vocab", ignore_errors=True)
    spoil(folder)
    capsys.readouterr()  # save_pretrained's progress bar
    code, out, err = cli("eval", f"models=[hf:{folder}]", *QUICK, f"output_dir={tmp_path / 'run'}")
    assert_refused(code, out, err, pattern)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_complete_folders_pass_the_weights_check(tmp_path, family):
    from segbench.models.sources.hf import _verify

    save(family, tmp_path / family, CLASSES)
    assert _verify(tmp_path / family, None, family) == []


def test_a_hub_id_in_the_hugging_face_cache_is_evaluated(cli, tmp_path, monkeypatch):
    """``hf:OWNER/NAME`` of a universal model: found in the Hugging Face cache (what ``download=true`` fills)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    repo = tmp_path / "hub" / "models--segbench-tests--tiny-oneformer"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    save("oneformer", repo / "snapshots" / "0123abcd", CLASSES)
    code, _, err = cli("eval", "models=[hf:segbench-tests/tiny-oneformer]", *QUICK, "bench.enabled=false",
                       f"output_dir={tmp_path / 'run'}")
    assert code == 0, err
    origin = json.loads((tmp_path / "run" / "results.json").read_text())["models"][0]["origin"]["weights"]
    assert origin["kind"] == "hub" and origin["family"] == "OneFormer"
    assert origin["task_input"] == "the task is semantic"


def test_a_fine_tuned_universal_model_reloads_from_its_checkpoint(cli, tmp_path):
    """segbench's training loop fine-tunes the network through its log scores; the saved checkpoint (the network
    held as ``model`` by the semantic wrapper) passes the weights check and gives the run's confusion matrix."""
    folder = tmp_path / "mask2former"
    save("mask2former", folder, CLASSES)
    code, _, err = cli("run", f"models=[hf:{folder}]", *QUICK, "train.iters=2", "train.batch_size=2",
                       "data.train_samples=4", "bench.enabled=false", f"output_dir={tmp_path / 'train'}")
    assert code == 0, err
    trained = json.loads((tmp_path / "train" / "results.json").read_text())["models"][0]
    checkpoint = next((tmp_path / "train" / "checkpoints").rglob("model.safetensors"))
    code, _, err = cli("eval", f"models=[hf:{folder}]", f"weights.hf:{folder}={checkpoint}", *QUICK,
                       "bench.enabled=false", f"output_dir={tmp_path / 'eval'}")
    assert code == 0, err
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())["models"][0]
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]
    untrained = save("mask2former", tmp_path / "again", CLASSES)
    images, _ = synthetic_val(6)
    before = reference_scores("mask2former", untrained, images).argmax(1).numpy()
    assert not np.array_equal(confusion(synthetic_val(6)[1].numpy(), before, len(CLASSES)),
                              np.array(evaluated["confusion_matrix"])[:, :len(CLASSES)])  # training changed it


def test_scores_of_many_queries_are_summed_a_few_at_a_time():
    """200 queries (Mask2Former's ADE20K checkpoints) are upsampled in chunks: the sum equals the one-shot einsum."""
    from segbench.models.sources.universal import semantic_scores

    torch.manual_seed(0)
    out = type("Out", (), {"class_queries_logits": torch.randn(2, 200, 151),
                           "masks_queries_logits": torch.randn(2, 200, 16, 24) * 5})
    torch.testing.assert_close(semantic_scores(out.class_queries_logits, out.masks_queries_logits, (64, 96)),
                               scores_of(out, (64, 96)), rtol=1e-5, atol=1e-5)
