"""Tiny random universal-segmentation checkpoints (Mask2Former, MaskFormer, OneFormer, EoMT), built offline as
transformers' own tests build them and saved with save_pretrained; their processors with a non-ImageNet
normalisation, and OneFormer's with a CLIP tokenizer of a few letters."""

from __future__ import annotations

import json
from pathlib import Path

import torch

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


def _labels(labels) -> dict:
    return {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}


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


def build(family: str, labels, seed: int = 0):
    """The network of ``family`` with random weights and classes ``labels``, in eval mode."""
    import transformers as t

    torch.manual_seed(seed)
    small = dict(num_queries=8, **_labels(labels))
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
    elif family == "eomt":
        net = t.EomtForUniversalSegmentation(t.EomtConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=48, patch_size=8, num_blocks=1,
            num_register_tokens=1, **small))
    elif family == "eomt_dinov3":
        net = t.EomtDinov3ForUniversalSegmentation(t.EomtDinov3Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=48,
            patch_size=8, num_blocks=1, num_register_tokens=1, **small))
    else:
        raise ValueError(family)
    with torch.no_grad():  # a class head spread wide enough that the random model predicts several classes,
        head = net.model.transformer_module.decoder.class_embed if family == "oneformer" else net.class_predictor
        head.weight.normal_(0.0, 2.0)
        masks = dict(net.named_parameters())[MASK_HEADS[family]]  # and masks that vary across the image
        masks.mul_(30.0)
    return net.eval()


def save(family: str, folder: Path, labels, seed: int = 0, tokenizer: bool = True):
    """``build``'s network saved with save_pretrained into ``folder``, with its image processor (and OneFormer's
    tokenizer unless ``tokenizer`` is False); the network."""
    import transformers as t

    net = build(family, labels, seed)
    net.save_pretrained(folder)
    norm = dict(image_mean=list(MEAN), image_std=list(STD))
    if family == "oneformer":
        processor = t.OneFormerImageProcessor(**norm)
        if tokenizer:
            tokens = _tokenizer(folder.parent / f"{folder.name}-vocab")
            t.OneFormerProcessor(processor, tokens, task_seq_length=8).save_pretrained(folder)
        else:
            processor.save_pretrained(folder)
    else:
        {"mask2former": t.Mask2FormerImageProcessor, "maskformer": t.MaskFormerImageProcessor,
         "eomt": t.EomtImageProcessor, "eomt_dinov3": t.EomtImageProcessor}[family](**norm).save_pretrained(
            folder)
    return net
