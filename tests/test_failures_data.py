"""Data and training failures that used to give a wrong number that looks right: images read as their tools show
them (EXIF orientation, 16-bit range) and training that stops at the first non-finite loss."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from fixtures_layouts import write_mask
from PIL import Image, ImageOps

TALL, WIDE = 32, 24  # the displayed size (height, width) of the EXIF tests' portrait images
SIDE = 64  # the images that train
STORE = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}  # upright -> file


def folder_args(root: Path, *extra: str) -> list[str]:
    return ["suite=folder_example", f"data.root={root}", "models=[unet-resnet10t]", "train.iters=2",
            "train.batch_size=2", "data.crop_size=null", "data.num_workers=0", "data.scale_range=[1.0,1.0]",
            "data.flip=false", "data.photometric=false", "eval.batch_size=1", "bench.enabled=false",
            "progress=false", *extra]


def upright_mask(shift: int) -> np.ndarray:
    """A TALL x WIDE 0/1 mask with no symmetry: a block in the top-left corner and a bar on the right."""
    mask = np.zeros((TALL, WIDE), np.uint8)
    mask[1 + shift:9 + shift, 2:10] = 1
    mask[:, WIDE - 4 - shift:WIDE - 2] = 1
    return mask


def save_turned(path: Path, upright: np.ndarray, orientation: int, **kwargs) -> Path:
    """Save ``upright`` stored as a camera would (turned) with EXIF ``orientation``, so viewers show it upright."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(upright).transpose(STORE[orientation]).save(path, exif=exif, **kwargs)
    with Image.open(path) as saved:  # Pillow's own reading of the orientation: the independent reference
        assert saved.size != (WIDE, TALL) or orientation == 3
        assert ImageOps.exif_transpose(saved).size == (WIDE, TALL)
    return path


def test_exif_orientation_applied_to_images_and_masks(cli, tmp_path, mlflow_uri, monkeypatch):
    """JPEG and PNG images with EXIF orientations 6 and 8, masks drawn upright or stored turned with their own
    EXIF tag: every pair is read upright, and predictions drawn upright score 1.0."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    root, preds = tmp_path / "data", tmp_path / "preds"
    pixels = np.random.default_rng(0).integers(0, 256, (TALL, WIDE, 3), dtype=np.uint8)
    masks = {name: upright_mask(i) for i, name in enumerate("abc")}
    for split in ("train", "val"):
        images, gts = root / "images" / split, root / "masks" / split
        save_turned(images / "a.jpg", pixels, 6, quality=95)  # camera JPEG; mask drawn on the upright view
        write_mask(gts / "a.png", masks["a"])
        save_turned(images / "b.png", pixels, 8)  # image and mask both stored turned, both tagged
        save_turned(gts / "b.png", masks["b"], 8)
        write_mask(images / "c.png", pixels[..., 0])  # upright image, mask stored upside down with its tag
        save_turned(gts / "c.png", masks["c"], 3)
    for name, mask in masks.items():
        write_mask(preds / f"{name}.png", mask)
    with Image.open(root / "masks" / "val" / "c.png") as stored:
        assert (np.asarray(stored) != masks["c"]).any()  # unturned, the stored mask is not the upright one

    code, out, err = cli("score", *folder_args(root), f"pred_dir={preds}", f"output_dir={tmp_path / 'out'}")

    assert code == 0, err
    metrics = json.loads((tmp_path / "out" / "results.json").read_text())["models"][0]["metrics"]
    assert metrics["mIoU"] == 1.0 and metrics["aAcc"] == 1.0

    from segbench.data.registry import build_dataset
    from segbench.pipeline.validation import load_config

    dataset = build_dataset(load_config(folder_args(root)).data, "val")
    for index, sample in enumerate(dataset.samples):
        with Image.open(sample.image) as image:
            shown = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        tensor = dataset[index][0]
        assert tuple(tensor.shape[-2:]) == shown.shape[:2] == (TALL, WIDE)
        assert np.array_equal(dataset.target(index), masks[sample.id])


def test_a_mask_in_the_stored_orientation_is_refused_naming_exif(cli, tmp_path, mlflow_uri, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    pixels = np.random.default_rng(0).integers(0, 256, (TALL, WIDE, 3), dtype=np.uint8)
    for split in ("train", "val"):
        save_turned(tmp_path / "images" / split / "a.jpg", pixels, 6, quality=95)
        write_mask(tmp_path / "masks" / split / "a.png", upright_mask(0).T)  # drawn on the stored, turned pixels

    code, out, err = cli("run", *folder_args(tmp_path))

    assert code == 2
    line, = err.strip().splitlines()
    assert re.search(r"a\.png: mask is 32x24 but its image a\.jpg is 24x32 after its EXIF orientation 6", line), line
    assert not (tmp_path / "outputs").exists()


def square_mask(i: int) -> np.ndarray:
    """A SIDE x SIDE 0/1 mask (training needs sides divisible by 32 and a batch of 2)."""
    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[4 + i:30, 8:50 - i] = 1
    return mask


def write_gray(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path)
    return path


def test_16_bit_images_are_read_with_their_range(cli, tmp_path, mlflow_uri, monkeypatch):
    """A 16-bit PNG holding v * 257 trains and evaluates exactly as the 8-bit PNG holding v (not saturated)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    levels = np.random.default_rng(1).integers(0, 256, (2, SIDE, SIDE), dtype=np.uint8)
    for bits, dtype, scale in ((8, np.uint8, 1), (16, np.uint16, 257)):
        for split in ("train", "val"):
            for i in range(2):
                folder = tmp_path / f"d{bits}"
                path = write_gray(folder / "images" / split / f"{i}.png", levels[i].astype(dtype) * scale)
                write_mask(folder / "masks" / split / f"{i}.png", square_mask(i))
                with Image.open(path) as image:
                    assert image.mode == ("L" if bits == 8 else "I;16")
    with Image.open(tmp_path / "d16" / "images" / "val" / "0.png") as image:
        assert (np.asarray(image.convert("RGB")) == 255).mean() > 0.9  # what a plain convert("RGB") would give

    results = {}
    for bits in (8, 16):
        out = tmp_path / f"out{bits}"
        code, _, err = cli("run", *folder_args(tmp_path / f"d{bits}"), "eval.save_predictions=true",
                           f"output_dir={out}")
        assert code == 0, err
        results[bits] = json.loads((out / "results.json").read_text())["models"][0]
        predictions = sorted(p.relative_to(out) for p in out.rglob("*.png") if "overlay" not in str(p))
        results[bits]["files"] = {p: np.asarray(Image.open(out / p)) for p in predictions}

    assert results[8]["files"] and results[8]["files"].keys() == results[16]["files"].keys()
    for name, prediction in results[8]["files"].items():
        assert np.array_equal(prediction, results[16]["files"][name]), name
    assert results[8]["metrics"] == results[16]["metrics"]
    assert results[8]["train"]["final_loss"] == results[16]["train"]["final_loss"]


def test_an_image_of_unknown_range_is_refused_with_the_fix(cli, tmp_path, mlflow_uri, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    for split in ("train", "val"):
        write_gray(tmp_path / "images" / split / "a.tif", np.linspace(0, 1, TALL * WIDE, dtype=np.float32)
                   .reshape(TALL, WIDE))
        write_mask(tmp_path / "masks" / split / "a.png", upright_mask(0))

    code, out, err = cli("run", *folder_args(tmp_path))

    assert code == 2
    line, = err.strip().splitlines()
    assert re.search(r"a\.tif: image mode is F \(32-bit floating-point .*save it as an 8-bit or 16-bit image", line)
    assert not (tmp_path / "outputs").exists()


# ------------------------------------------------------------------------------------------ non-finite training loss


def _runs(uri: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {run.info.run_name: run.info.status for run in runs}


def binary_folder(root: Path) -> Path:
    levels = np.random.default_rng(2).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    for split in ("train", "val"):
        for i in range(2):
            write_mask(root / "images" / split / f"{i}.png", levels[..., i])
            write_mask(root / "masks" / split / f"{i}.png", square_mask(i))
    return root


# train.min_lr above train.lr and a non-finite train.poly_power are refused by the configuration's declared ranges
# and relations before anything runs (tests/test_failures_config.py); what is left to diverge is a model whose loss
# overflows with settings inside their ranges: here the loss is scaled past float32's range from the third iteration
@pytest.mark.parametrize(("overrides", "cause"), [
    (["train.lr=0.05", "train.iters=8"], r"likely cause: train\.lr=0\.05 is likely too high"),
], ids=["overflow"])
def test_a_diverging_model_stops_at_the_first_non_finite_loss(cli, tmp_path, mlflow_uri, monkeypatch, overrides,
                                                               cause):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    losses = []
    from segbench.train import losses as loss_module

    forward = loss_module.WeightedSum.forward

    def recording(self, logits, target):
        loss = forward(self, logits, target) * (1e39 if len(losses) >= 2 else 1.0)  # inf in float32
        losses.append(loss.item())
        return loss

    monkeypatch.setattr(loss_module.WeightedSum, "forward", recording)

    code, out, err = cli("run", *folder_args(binary_folder(tmp_path / "data")), "models=[unet-resnet10t]",
                         "train.optimizer=sgd", *overrides)

    first = next(i for i, loss in enumerate(losses) if not math.isfinite(loss))  # stopped at the first one
    assert len(losses) == first + 1
    assert code == 2
    line, = err.strip().splitlines()
    assert line.startswith(f"segbench: error: train unet-resnet10t: the loss is {losses[first]} at iteration "
                           f"{first + 1} of "), line
    assert re.search(cause, line), line
    assert _runs(mlflow_uri)["unet-resnet10t"] == "FAILED"
    assert not list(tmp_path.rglob("results.json"))
    assert [p.name.endswith(".partial") for p in (tmp_path / "outputs").glob("*/*")] == [True]


def test_a_loss_that_is_infinite_from_the_start_names_the_inputs(cli, tmp_path, mlflow_uri, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    from segbench.train import losses as loss_module

    monkeypatch.setattr(loss_module.WeightedSum, "forward", lambda self, logits, target: logits.sum() * math.inf)

    code, out, err = cli("run", *folder_args(binary_folder(tmp_path / "data")), "models=[unet-resnet10t]")

    assert code == 2
    line, = err.strip().splitlines()
    assert re.search(r"the loss is (inf|-inf|nan) at iteration 1 of 2 .*likely cause: the inputs or the model's "
                     r"weights", line), line
    assert _runs(mlflow_uri)["unet-resnet10t"] == "FAILED"
    assert not list(tmp_path.rglob("results.json"))


def _diverge_on_one_rank(rank: int, store: str, results: str) -> None:
    """Rank 1's loss turns infinite at iteration 3; every rank must stop there."""
    import torch
    import torch.distributed as dist

    from segbench.config.schema import TrainConfig
    from segbench.train.loop import TrainingDiverged, train

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    class Loss(torch.nn.Module):
        calls = 0

        def forward(self, logits, target):
            self.calls += 1
            loss = logits.float().mean() ** 2
            return loss * math.inf if rank == 1 and self.calls == 3 else loss

    batches = [(torch.ones(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64))] * 4
    torch.manual_seed(0)  # the same weights whichever test started the fork server
    try:
        train(torch.nn.Conv2d(3, 2, 1), batches, Loss(), TrainConfig(iters=4, batch_size=1, lr=0.01),
              torch.device("cpu"), progress=False)
        outcome = "finished"
    except TrainingDiverged as error:
        outcome = str(error)
    finally:
        dist.destroy_process_group()
    Path(results, f"{rank}.txt").write_text(outcome)


@pytest.mark.slow
def test_every_rank_of_a_job_stops_at_the_same_non_finite_loss(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_diverge_on_one_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2,
                       start_method="forkserver")  # a fresh server: this process may have run autograd threads
    outcomes = [(tmp_path / f"{rank}.txt").read_text() for rank in range(2)]
    assert all("at iteration 3 of 4" in outcome for outcome in outcomes), outcomes
    assert outcomes[1].startswith("train: the loss is inf")
    loss = outcomes[0].removeprefix("train: the loss is ").split()[0]
    assert math.isfinite(float(loss)), outcomes[0]  # finite here, stopped because another rank diverged


def test_a_batch_of_one_for_a_model_with_global_pooling_and_batch_norm_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("run", "models=[deeplabv3-resnet10t]", "train.batch_size=1", "train.iters=2",
                       "data.train_samples=2", "data.val_samples=2", "bench.enabled=false", "progress=false",
                       "tracking.enabled=false", f"output_dir={tmp_path / 'out'}")
    assert code == 2 and err.strip().splitlines() == [
        "segbench: error: train deeplabv3-resnet10t: a batch-norm layer of the model sees one value per channel "
        "with 1 image(s) per step (after global pooling); use train.batch_size=2 or more per process"]
    assert not list(tmp_path.rglob("results.json"))
