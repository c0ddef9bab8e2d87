"""On-disk data sets in their real layouts: label mappings value by value, data checks, transforms, loader, suites."""

import os
import shutil

import numpy as np
import pytest
import torch
from fixtures_layouts import (
    ACDC_SAMPLES,
    ADE_TRAIN,
    CITYSCAPES_TRAIN,
    HEIGHT,
    STRIPE,
    VOC_RAW,
    WIDTH,
    make_acdc,
    make_ade20k,
    make_cityscapes,
    make_folder,
    make_voc,
    stripes,
    write_image,
    write_mask,
)
from PIL import Image

from segbench.config.schema import DataConfig, from_dict
from segbench.data import checks as checks_module
from segbench.data.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_dataset,
    check_available,
    dataset_info,
    make_loader,
)
from segbench.data.transforms import MEAN_COLOUR
from segbench.errors import UserError
from segbench.pipeline.validation import load_config


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / "cache"))


def column(mask) -> list[int]:
    """The value of each stripe of a striped mask."""
    return np.asarray(mask)[::STRIPE, 0].tolist()


def test_cityscapes_label_ids_become_train_ids_value_by_value(tmp_path):
    cfg = DataConfig(name="cityscapes", root=str(make_cityscapes(tmp_path)))
    train = build_dataset(cfg, "train")
    assert [s.id for s in train.samples] == ["aachen_000000_000019", "aachen_000001_000019"]
    # stripes hold label ids 7, 26, 0, 255 (-1), 33, 8, 19, 4 (rolled by one for the second image)
    assert column(train.target(0)) == [0, 13, 255, 255, 18, 1, 6, 255]
    assert column(train.target(1)) == [255, 0, 13, 255, 255, 18, 1, 6]
    image, mask = train[0]
    assert image.dtype == torch.float32 and image.shape == (3, HEIGHT, WIDTH)
    assert mask.dtype == torch.int64 and mask.shape == (HEIGHT, WIDTH)
    raw = np.asarray(Image.open(train.samples[0].image), dtype=np.float32)[0, 0] / 255
    expected = (raw - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert image[:, 0, 0].numpy() == pytest.approx(expected, abs=1e-5)
    info = dataset_info(cfg)
    assert info.num_classes == 19 and info.classes[0] == "road" and info.classes[-1] == "bicycle"
    assert info.palette[0] == (128, 64, 128) and info.palette[13] == (0, 0, 142)
    assert [name for name, _ in info.categories] == ["flat", "construction", "object", "nature", "sky", "human",
                                                     "vehicle"]


def test_cityscapes_val_uses_train_id_files_when_present(tmp_path):
    root = make_cityscapes(tmp_path)
    gt = root / "gtFine" / "val" / "frankfurt"
    write_mask(gt / "frankfurt_000000_000019_gtFine_labelTrainIds.png", np.full((HEIGHT, WIDTH), 5))
    val = build_dataset(DataConfig(name="cityscapes", root=str(root)), "val")
    assert [s.id for s in val.samples] == ["frankfurt_000000_000019", "frankfurt_000001_000019",
                                           "lindau_000000_000019"]
    assert column(val.target(0)) == [5] * 8  # the train-id file wins over the label-id file
    assert column(val.target(1)) == list(np.roll(CITYSCAPES_TRAIN, 1))  # label ids only
    assert column(val.target(2)) == list(np.roll(CITYSCAPES_TRAIN, 2))  # train ids only
    image, mask = val[2]
    assert torch.equal(mask, torch.from_numpy(val.target(2)))  # evaluation: no geometric change


def test_acdc_conditions_label_ids_and_train_ids(tmp_path):
    root = make_acdc(tmp_path)
    cfg = DataConfig(name="acdc", root=str(root))
    val = build_dataset(cfg, "val")
    expected = [(f"{c}/val/{seq}/{seq}_frame_{f:06d}", n) for n, (c, split, seq, f) in enumerate(ACDC_SAMPLES)
                if split == "val"]
    assert [s.id for s in val.samples] == [key for key, _ in expected]  # every condition, no *_ref image
    for index, (key, n) in enumerate(expected):
        # label ids go through the Cityscapes table; fog GOPR0476 frame 9 has train ids only
        assert column(val.target(index)) == list(np.roll(CITYSCAPES_TRAIN, n)), key
    fog = build_dataset(cfg, "fog/val")
    assert [s.id for s in fog.samples] == [key for key, _ in expected if key.startswith("fog/")]
    assert len(build_dataset(cfg, "train")) == 4
    info = dataset_info(cfg)
    assert info.name == "acdc" and info.classes == dataset_info(DataConfig(name="cityscapes")).classes
    from segbench.data.layouts.acdc import condition_of

    assert [condition_of(s.id) for s in val.samples] == ["fog", "fog", "night", "rain", "snow"]


def test_acdc_refuses_missing_data_and_bad_splits(tmp_path, monkeypatch, cli):
    monkeypatch.delenv("ACDC_ROOT", raising=False)
    with pytest.raises(UserError, match="acdc: data.root is not set and ACDC_ROOT is empty.*acdc.vision.ee.ethz.ch"):
        check_available(DataConfig(name="acdc"))
    root = make_acdc(tmp_path / "acdc")
    shutil.rmtree(root / "gt" / "snow" / "val")
    with pytest.raises(UserError, match=f"acdc: {root / 'gt' / 'snow' / 'val'} is missing; expected rgb_anon/"):
        check_available(DataConfig(name="acdc", root=str(root)))
    check_available(DataConfig(name="acdc", root=str(root), val_split="fog/val"))  # one condition needs only its own
    with pytest.raises(UserError, match=r"acdc: split 'haze/val': expected SPLIT .* fog, night, rain, snow"):
        check_available(DataConfig(name="acdc", root=str(root), val_split="haze/val"))
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("run", "suite=cityscapes", "data.name=acdc", f"data.root={tmp_path / 'nowhere'}",
                         "models=[unet-resnet10t]")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"segbench: error: acdc: data root {tmp_path / 'nowhere'} does not exist; expected ")
    assert not (tmp_path / "outputs").exists()


def test_ade20k_reduces_the_zero_label_and_maps_split_names(tmp_path):
    root = make_ade20k(tmp_path)
    for given in (root, root / "ADEChallengeData2016"):  # the parent folder or the data set folder itself
        cfg = DataConfig(name="ade20k", root=str(given))
        val = build_dataset(cfg, "val")
        assert len(val) == 3 and val.samples[0].id == "ADE_val_00000001"
        assert column(val.target(0)) == list(ADE_TRAIN) == [255, 0, 149, 1, 255, 74, 148, 2]
        assert len(build_dataset(cfg, "train")) == 2
    assert len(dataset_info(cfg).classes) == 150 and dataset_info(cfg).classes[-1] == "flag"


def test_voc_palette_indices_and_boundary_ignore(tmp_path):
    root = make_voc(tmp_path)
    mask_file = root / "VOCdevkit/VOC2012/SegmentationClass/2007_000033.png"
    assert Image.open(mask_file).mode == "P"
    for given in (root, root / "VOCdevkit", root / "VOCdevkit" / "VOC2012"):
        val = build_dataset(DataConfig(name="voc", root=str(given)), "val")
        assert [s.id for s in val.samples] == ["2007_000033", "2007_000042", "2007_000061"]
        assert column(val.target(0)) == list(VOC_RAW) == [0, 15, 255, 1, 20, 255, 7, 0]
    custom = build_dataset(DataConfig(name="voc", root=str(root), ignore_index=254), "val")
    assert column(custom.target(0)) == [0, 15, 254, 1, 20, 254, 7, 0]
    assert dataset_info(DataConfig(name="voc")).palette[:3] == ((0, 0, 0), (128, 0, 0), (0, 128, 0))


def test_folder_binary_multiclass_and_reduce_zero_label(tmp_path):
    binary = np.zeros((HEIGHT, WIDTH), np.uint8)
    binary[:, 40:] = 1
    binary[0, 0] = 255
    root = make_folder(tmp_path / "bin", {"train": {"a": binary}, "val": {"b": binary, "sub/c": binary}})
    cfg = DataConfig(name="folder", root=str(root), classes=["background", "lesion"])
    val = build_dataset(cfg, "val")
    assert [s.id for s in val.samples] == ["b", "sub/c"]  # nested folders keep their relative path
    assert np.array_equal(val.target(0), binary.astype(np.int64))
    assert dataset_info(cfg).palette == ((0, 0, 0), (128, 0, 0))

    multi = stripes((0, 1, 2, 3, 0, 255, 2, 1))
    root = make_folder(tmp_path / "multi", {"val": {"x": multi}})
    reduced = DataConfig(name="folder", root=str(root), classes=["a", "b", "c"], reduce_zero_label=True,
                         palette=[[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert column(build_dataset(reduced, "val").target(0)) == [255, 0, 1, 2, 255, 255, 1, 0]
    assert dataset_info(reduced).palette[2] == (7, 8, 9)
    with pytest.raises(UserError, match="data.classes is not set"):
        check_available(DataConfig(name="folder", root=str(root)))
    with pytest.raises(UserError, match="data.palette must hold one"):
        check_available(DataConfig(name="folder", root=str(root), classes=["a"], palette=[[1, 2, 3], [4, 5, 6]]))


# --- data checks: every problem names its file ------------------------------------------------------------


def refused(cfg: DataConfig, split: str = "val") -> str:
    with pytest.raises(UserError) as info:
        build_dataset(cfg, split)
    message = str(info.value)
    assert "\n" not in message and "data.skip_bad=true" in message
    return message


def test_image_without_mask_and_mask_without_image(tmp_path):
    root = make_cityscapes(tmp_path)
    (root / "gtFine/val/frankfurt/frankfurt_000001_000019_gtFine_labelIds.png").unlink()
    (root / "leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png").unlink()
    cfg = DataConfig(name="cityscapes", root=str(root))
    message = refused(cfg)
    assert "2 problems" in message
    assert "frankfurt_000001_000019_leftImg8bit.png: image without its mask (expected " in message
    assert "frankfurt_000001_000019_gtFine_labelIds.png)" in message
    assert "lindau_000000_000019_gtFine_labelTrainIds.png: mask without its image" in message

    cfg.skip_bad = True
    val = build_dataset(cfg, "val")
    assert len(val) == 1 and val.skipped == 2 and len(val.problems) == 2
    assert all("frankfurt_000001" in p.path or "lindau" in p.path for p in val.problems)


def test_mask_of_another_size(tmp_path):
    root = make_voc(tmp_path)
    write_mask(root / "VOCdevkit/VOC2012/SegmentationClass/2007_000042.png", np.zeros((HEIGHT, WIDTH + 2)))
    message = refused(DataConfig(name="voc", root=str(root)))
    assert "2007_000042.png: mask is 66x32 but its image 2007_000042.jpg is 64x32" in message


@pytest.mark.parametrize("name, maker, relative, values, bad", [
    ("cityscapes", make_cityscapes, "gtFine/val/frankfurt/frankfurt_000001_000019_gtFine_labelIds.png",
     (7, 40, 7, 7, 7, 7, 7, 34), "label values 34, 40 are neither classes nor ignored under the Cityscapes label-id"),
    ("cityscapes", make_cityscapes, "gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png",
     (0, 19, 18, 255, 0, 0, 0, 0), "label values 19 are neither classes nor ignored under Cityscapes train ids"),
    ("ade20k", make_ade20k, "ADEChallengeData2016/annotations/validation/ADE_val_00000001.png",
     (0, 151, 150, 1, 0, 0, 0, 0), "label values 151 are neither"),
    ("voc", make_voc, "VOCdevkit/VOC2012/SegmentationClass/2007_000061.png",
     (0, 21, 254, 255, 0, 0, 0, 0), "label values 21, 254 are neither"),
])
def test_label_value_that_is_neither_class_nor_ignored(tmp_path, name, maker, relative, values, bad):
    root = maker(tmp_path)
    write_mask(root / relative, stripes(values), palette=name == "voc")
    message = refused(DataConfig(name=name, root=str(root)))
    assert f"{os.path.basename(relative)}: {bad}" in message


def test_folder_label_values_after_reduce_zero_label(tmp_path):
    mask = stripes((0, 1, 2, 3, 0, 0, 0, 0))
    root = make_folder(tmp_path, {"val": {"m": mask}})
    assert "m.png: label values 3 are neither" in refused(DataConfig(name="folder", root=str(root),
                                                                     classes=["a", "b", "c"]))
    assert len(build_dataset(DataConfig(name="folder", root=str(root), classes=["a", "b", "c"],
                                        reduce_zero_label=True), "val")) == 1


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_unreadable_and_truncated_files(tmp_path):
    root = make_ade20k(tmp_path)
    base = root / "ADEChallengeData2016"
    truncate(base / "images/validation/ADE_val_00000001.jpg")
    truncate(base / "annotations/validation/ADE_val_00000002.png")
    (base / "images/validation/ADE_val_00000003.jpg").write_bytes(b"not an image at all")
    cfg = DataConfig(name="ade20k", root=str(root))
    message = refused(cfg)
    assert "3 problems" in message
    assert "ADE_val_00000001.jpg: truncated image" in message
    assert "ADE_val_00000002.png: truncated or corrupt mask" in message
    assert "ADE_val_00000003.jpg: unreadable image" in message


def test_truncated_png_image_and_mask_mode(tmp_path):
    root = make_cityscapes(tmp_path)
    truncate(root / "leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png", 0.8)
    rgb = root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    Image.open(rgb).convert("RGB").save(rgb)
    message = refused(DataConfig(name="cityscapes", root=str(root)), "train")
    assert "aachen_000001_000019_leftImg8bit.png: truncated or corrupt image" in message
    assert "aachen_000000_000019_gtFine_labelIds.png: mask mode is RGB; expected a single-channel" in message


def test_refusal_quotes_the_first_few_and_counts_all(tmp_path):
    masks = {f"m{i}": stripes((0, 9, 0, 0, 0, 0, 0, 0)) for i in range(5)}
    cfg = DataConfig(name="folder", root=str(make_folder(tmp_path, {"val": masks})), classes=["a", "b"])
    message = refused(cfg)
    assert message.startswith("folder val: 5 problems in the data: ")
    assert "m0.png" in message and "m2.png" in message and "m3.png" not in message and "(and 2 more)" in message
    cfg.skip_bad = True
    with pytest.raises(UserError, match="every sample under .* has a problem"):
        build_dataset(cfg, "val")


def test_checks_are_cached_and_redone_for_a_changed_file(tmp_path, monkeypatch):
    root = make_voc(tmp_path)
    cfg = DataConfig(name="voc", root=str(root))
    assert len(build_dataset(cfg, "val")) == 3
    calls = []
    real = checks_module.check_pair
    monkeypatch.setattr(checks_module, "check_pair", lambda *args: calls.append(args[1].name) or real(*args))
    assert len(build_dataset(cfg, "val")) == 3 and calls == []  # every pair came from the cache
    mask = root / "VOCdevkit/VOC2012/SegmentationClass/2007_000042.png"
    write_mask(mask, stripes((0, 21, 0, 0, 0, 0, 0, 0)), palette=True)
    os.utime(mask, ns=(1, 1))  # a new mtime, whatever the file system's resolution
    assert "2007_000042.png: label values 21" in refused(cfg)
    assert calls == ["2007_000042.png"]


# --- transforms ---------------------------------------------------------------------------------------------


def test_training_crop_pads_masks_with_ignore_index_and_scales_from_base_size(tmp_path):
    root = make_cityscapes(tmp_path)
    cfg = DataConfig(name="cityscapes", root=str(root), crop_size=[48, 96], base_size=[64, 32],
                     scale_range=[1.0, 1.0])
    image, mask = build_dataset(cfg, "train")[0]
    assert image.shape == (3, 48, 96) and mask.shape == (48, 96)
    rows, cols = torch.nonzero(mask != 255, as_tuple=True)
    assert len(rows) == 5 * STRIPE * WIDTH  # the whole 64x32 image is inside the crop, 5 of 8 stripes labelled
    assert rows.max() - rows.min() < HEIGHT and cols.max() - cols.min() < WIDTH  # and the rest is padding
    fill = (torch.tensor(MEAN_COLOUR) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    padding = torch.isclose(image, fill[:, None, None], atol=1e-6).all(dim=0)
    assert padding.sum() == 96 * 48 - WIDTH * HEIGHT and (mask[padding] == 255).all()
    assert fill.abs().max() < 0.01  # the mean colour: about zero once normalised
    cfg.base_size, cfg.crop_size = [128, 64], [16, 16]  # twice the size, nearest-neighbour masks
    values = set()
    torch.manual_seed(0)
    for _ in range(10):
        image, mask = build_dataset(cfg, "train")[0]
        assert mask.shape == (16, 16)
        values |= set(mask.unique().tolist())
    assert values <= set(CITYSCAPES_TRAIN)


def test_random_scale_range_changes_sizes_and_flip_moves_image_and_mask_together(tmp_path):
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[:, : WIDTH // 4] = 1
    root = make_folder(tmp_path, {"train": {"x": mask}})
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:, : WIDTH // 4] = 255
    Image.fromarray(image).save(root / "images/train/x.png")
    cfg = DataConfig(name="folder", root=str(root), classes=["a", "b"], flip=True)
    data = build_dataset(cfg, "train")
    torch.manual_seed(0)
    flips = set()
    for _ in range(12):
        img, msk = data[0]
        bright = img[0] > 0
        assert torch.equal(bright, msk == 1)  # the bright band and class 1 stay on the same side
        flips.add(bool(msk[0, -1] == 1))
    assert flips == {True, False}
    cfg.flip, cfg.scale_range = False, [0.5, 2.0]
    data = build_dataset(cfg, "train")
    sizes = {tuple(data[0][1].shape) for _ in range(8)}
    assert len(sizes) > 1 and all(16 <= h <= 64 and abs(w - 2 * h) <= 1 for h, w in sizes)


def test_photometric_changes_only_the_image(tmp_path):
    root = make_voc(tmp_path)
    plain = build_dataset(DataConfig(name="voc", root=str(root)), "train")
    jitter = build_dataset(DataConfig(name="voc", root=str(root), photometric=True), "train")
    torch.manual_seed(0)
    (a, am), (b, bm) = plain[0], jitter[0]
    assert torch.equal(am, bm) and not torch.allclose(a, b)


# --- loader and config ----------------------------------------------------------------------------------------


def test_make_loader_settings_and_size_check(tmp_path):
    ade = DataConfig(name="ade20k", root=str(make_ade20k(tmp_path)))
    val = build_dataset(ade, "val")  # widths 64, 72, 80: evaluation keeps each image's size
    with pytest.raises(UserError, match="images differ in size.*eval.batch_size=1"):
        make_loader(val, 2, False, 0, "cpu", 0)
    loader = make_loader(val, 1, False, 0, "cpu", 0)
    assert not loader.pin_memory and [tuple(m.shape) for _, m in loader] == [(1, 32, 64), (1, 32, 72), (1, 32, 80)]
    ade.crop_size = [32, 32]
    train = build_dataset(ade, "train")
    loader = make_loader(train, 2, True, 2, "cpu", 0)
    assert loader.persistent_workers and loader.drop_last and loader.num_workers == 2
    images, masks = next(iter(loader))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)


def test_loader_workers_give_the_same_batches(tmp_path):
    val = build_dataset(DataConfig(name="voc", root=str(make_voc(tmp_path))), "val")
    serial = [m for _, m in make_loader(val, 3, False, 0, "cpu", 0)]
    parallel = [m for _, m in make_loader(val, 3, False, 2, "cpu", 0)]
    assert len(serial) == 1 and torch.equal(serial[0], parallel[0])


def test_suites_load_with_a_data_root_and_from_the_environment(tmp_path, monkeypatch):
    root = make_cityscapes(tmp_path / "cs")
    cfg = load_config(["suite=cityscapes", f"data.root={root}"])
    assert cfg.data.name == "cityscapes" and cfg.data.root == str(root)
    assert cfg.data.crop_size == [512, 1024] and cfg.eval.mode == "slide" and cfg.train.lr == 0.01
    monkeypatch.setenv("CITYSCAPES_ROOT", str(root))
    assert load_config(["suite=cityscapes"]).data.root == str(root)
    monkeypatch.setenv("ADE20K_ROOT", str(make_ade20k(tmp_path / "ade")))
    assert load_config(["suite=ade20k"]).data.name == "ade20k"
    assert load_config(["suite=voc", f"data.root={make_voc(tmp_path / 'voc')}"]).eval.resize == [2048, 512]
    folder = make_folder(tmp_path / "f", {"train": {"a": stripes((0,) * 8)}, "val": {"b": stripes((1,) * 8)}})
    assert load_config(["suite=folder_example", f"data.root={folder}"]).data.classes == ["background", "foreground"]


def test_without_data_a_suite_stops_at_config_time_with_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("CITYSCAPES_ROOT", raising=False)
    with pytest.raises(UserError) as info:
        load_config(["suite=cityscapes"])
    message = str(info.value)
    assert "\n" not in message
    assert "data.root is not set and CITYSCAPES_ROOT is empty" in message
    assert "leftImg8bit/{split}/CITY/NAME_leftImg8bit.png" in message and "gtFine_labelIds.png" in message
    assert "https://www.cityscapes-dataset.com/" in message
    with pytest.raises(UserError, match=f"data root {tmp_path / 'nowhere'} does not exist"):
        load_config(["suite=cityscapes", f"data.root={tmp_path / 'nowhere'}"])
    root = make_cityscapes(tmp_path / "cs")
    shutil.rmtree(root / "gtFine" / "train")
    with pytest.raises(UserError, match=f"{root / 'gtFine' / 'train'} is missing"):
        load_config(["suite=cityscapes", f"data.root={root}"])


def test_cli_run_without_data_exits_2_with_one_line(cli, monkeypatch):
    monkeypatch.delenv("CITYSCAPES_ROOT", raising=False)
    code, out, err = cli("run", "suite=cityscapes")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("segbench: error: cityscapes: data.root is not set")


def test_transform_settings_are_checked_at_config_time():
    with pytest.raises(UserError, match=r"data.crop_size: expected \[height, width\]"):  # declared on the field
        from_dict({"crop_size": [512]}, DataConfig, where="data.")
    with pytest.raises(UserError, match="data.scale_range"):
        from_dict({"scale_range": [2.0, 0.5]}, DataConfig, where="data.")


def test_folder_takes_jpeg_images_and_names_an_unpaired_one(tmp_path):
    root = make_folder(tmp_path, {"val": {"a": stripes((1,) * 8)}}, suffix=".jpg")
    write_image(root / "images/val/extra.jpg", seed=3)
    message = refused(DataConfig(name="folder", root=str(root), classes=["a", "b"]))
    assert "extra.jpg: image without its mask (expected " in message and "masks/val/extra.png" in message


def test_data_set_facts_live_in_their_entries(tmp_path):
    """VOC predictions are palette PNGs like its masks, ACDC groups samples by condition and the synthetic scenes
    know their size, each from the data set's own entry (a plugin data set gets the same hooks)."""
    import torch

    from segbench.data.registry import DATASETS
    from segbench.evaluation.predictions import PredictionWriter

    root = make_voc(tmp_path)
    cfg = DataConfig(name="voc", root=str(root))
    val = build_dataset(cfg, "val")
    writer = PredictionWriter(tmp_path / "pred", val, dataset_info(cfg), overlays=0)
    targets = torch.as_tensor(np.stack([val.target(i) for i in range(len(val))]))
    pred = torch.where(targets == 255, 0, targets)  # a prediction has a class everywhere
    writer.write(0, torch.zeros(len(val), 3, *pred.shape[-2:]), pred)
    written = Image.open(tmp_path / "pred" / "labels" / "2007_000033.png")
    assert written.mode == "P" and written.getpalette()[3:6] == [128, 0, 0]
    assert column(np.asarray(written)) == [0, 15, 0, 1, 20, 0, 7, 0]
    assert not dataset_info(DataConfig(name="cityscapes")).palette_masks
    assert DATASETS.get("acdc").group_of("night/GOPR0355/a") == "night"
    assert DATASETS.get("cityscapes").group_of is None
    assert DATASETS.get("synthetic").image_size(DataConfig(name="synthetic", image_size=96)) == (96, 96)
