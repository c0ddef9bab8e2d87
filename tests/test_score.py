"""``score_predictions``: prediction PNGs from any tool against the ground truth, with no model."""

import json

import numpy as np
import pytest
from fixtures_layouts import HEIGHT, WIDTH, make_ade20k, make_cityscapes, make_folder, make_voc, stripes, write_mask
from PIL import Image

from segbench.config.schema import DataConfig, SuiteConfig, TrackingConfig
from segbench.data.layouts.cityscapes import CATEGORIES, CLASSES, TRAIN_CLASSES
from segbench.data.registry import build_dataset
from segbench.errors import UserError
from segbench.metrics.confusion import category_iou
from segbench.pipeline.score import score_predictions
from segbench.pipeline.validation import load_config

TRAIN_TO_LABEL_ID = np.zeros(256, np.uint8)  # ignored train ids (255) become label id 0, "unlabeled"
TRAIN_TO_LABEL_ID[: len(TRAIN_CLASSES)] = [label_id for _, label_id, _, _ in TRAIN_CLASSES]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / "cache"))


def suite(tmp_path, **data) -> SuiteConfig:
    return SuiteConfig(name="t", models=["unet-resnet18"], data=DataConfig(**data), progress=False,
                       tracking=TrackingConfig(enabled=False))


def score(cfg, pred_dir, tmp_path, **kwargs) -> dict:
    out = tmp_path / "out"
    cfg.output_dir = str(out if not out.exists() else tmp_path / f"out{len(list(tmp_path.glob('out*')))}")
    return json.loads(score_predictions(cfg, pred_dir, **kwargs).read_text())


def write_predictions(cfg: SuiteConfig, folder, convert=lambda target: target, name=lambda sample: sample.id):
    """One PNG per validation image: ``convert`` of its ground truth (train ids, 255 ignored)."""
    dataset = build_dataset(cfg.data, cfg.data.val_split)
    for index, sample in enumerate(dataset.samples):
        write_mask(folder / f"{name(sample)}.png", convert(dataset.target(index)))
    return folder


def test_cityscapes_ground_truth_as_label_ids_or_train_ids_scores_one(tmp_path, mlflow_uri, monkeypatch):
    cfg = suite(tmp_path, name="cityscapes", root=str(make_cityscapes(tmp_path / "cs")))
    cfg.tracking = TrackingConfig(uri=mlflow_uri)
    # label ids, named like the images and kept in city folders (what MMSegmentation and the official script use)
    ids = write_predictions(cfg, tmp_path / "ids", lambda t: TRAIN_TO_LABEL_ID[t],
                            lambda s: f"{s.image.parent.name}/{s.image.stem}")
    results = score(cfg, ids, tmp_path)
    record = results["models"][0]
    assert record["name"] == "ids" and record["metrics"]["mIoU"] == 1.0 and record["metrics"]["aAcc"] == 1.0
    assert record["evaluation"]["label_space"] == "dataset" and record["evaluation"]["label_space_detected"]
    assert record["evaluation"]["images"] == 3 and record["evaluation"]["void_pixels"] == 0
    assert len(record["confusion_matrix"]) == 19 and len(record["confusion_matrix"][0]) == 20
    assert record["categories"]["IoU"]["flat"] == 1.0 and record["categories"]["IoU"]["nature"] is None
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["models"][0]["metrics"] == record["metrics"] and on_disk["dataset"]["split"] == "val"
    assert on_disk["convention"]["void_prediction"] == "false_negative"
    assert len(on_disk["models"][0]["per_image"]["intersection"]) == 3
    assert (tmp_path / "out" / "per_class_ids.csv").is_file()

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)  # not mlflow.set_tracking_uri: it would outlive this test
    runs = mlflow.search_runs(experiment_names=["t"])
    child = runs[runs["tags.mlflow.runName"] == "ids"].iloc[0]
    assert child["metrics.mIoU"] == 1.0 and child["metrics.IoU.category.flat"] == 1.0
    assert child["run_id"] == record["mlflow_run_id"] and set(runs["status"]) == {"FINISHED"}

    trains = write_predictions(cfg, tmp_path / "trains")  # train ids, named by id, flat
    record = score(cfg, trains, tmp_path / "b")["models"][0]
    assert record["metrics"]["mIoU"] == 1.0 and record["evaluation"]["label_space"] == "train"


def test_cityscapes_label_id_predictions_score_like_train_id_predictions(tmp_path):
    cfg = suite(tmp_path, name="cityscapes", root=str(make_cityscapes(tmp_path / "cs")))
    rng = np.random.default_rng(0)

    def noisy(target):
        pred = np.where(rng.random(target.shape) < 0.3, rng.integers(0, 19, target.shape), target)
        return np.where(pred == 255, 0, pred)

    trains = write_predictions(cfg, tmp_path / "trains", noisy)
    ids = tmp_path / "ids"
    for path in sorted(trains.glob("*.png")):
        write_mask(ids / path.name, TRAIN_TO_LABEL_ID[np.asarray(Image.open(path))])
    a = score(cfg, trains, tmp_path / "a")["models"][0]
    b = score(cfg, ids, tmp_path / "b", label_space="dataset")["models"][0]
    assert a["evaluation"]["label_space"] == "train"
    assert a["confusion_matrix"] == b["confusion_matrix"] and a["metrics"] == b["metrics"]
    assert 0 < a["metrics"]["mIoU"] < 1


def test_a_void_prediction_on_a_labelled_pixel_is_a_miss(tmp_path):
    """Label id 4 ('static', void) predicted on 8 road pixels: a false negative for road, no one's false positive."""
    cfg = suite(tmp_path, name="cityscapes", root=str(make_cityscapes(tmp_path / "cs")))

    def with_void(target):
        pred = TRAIN_TO_LABEL_ID[target].copy()
        road = np.argwhere(target == 0)[:8]
        pred[road[:, 0], road[:, 1]] = 4
        return pred

    record = score(cfg, write_predictions(cfg, tmp_path / "p", with_void), tmp_path)["models"][0]
    matrix = np.array(record["confusion_matrix"])
    road = matrix[0]
    assert road[-1] == 3 * 8 and road[0] == road.sum() - 24  # 8 void pixels per image
    assert record["per_class"][0]["IoU"] == pytest.approx(road[0] / road.sum())
    assert all(row["IoU"] in (1.0, None) or np.isnan(row["IoU"]) for row in record["per_class"][1:])


def test_known_perturbation_scores_the_hand_computed_value(tmp_path):
    """GT: left half class a (16 px), right half class b (16 px). Prediction: column 4 (4 px of b) as a, and two
    pixels of a as 7, a value that is no class. a: TP 14, FP 4, FN 2 -> IoU 14/20. b: TP 12, FN 4 -> 12/16.
    c: absent from both -> NaN, left out. mIoU (0.7 + 0.75) / 2; aAcc 26/32; mDice (28/34 + 24/28) / 2."""
    gt = np.zeros((4, 8), np.uint8)
    gt[:, 4:] = 1
    root = make_folder(tmp_path / "data", {"val": {"x": gt}})
    cfg = suite(tmp_path, name="folder", root=str(root), classes=["a", "b", "c"])
    pred = gt.copy()
    pred[:, 4] = 0
    pred[0, :2] = 7
    write_mask(tmp_path / "pred" / "x.png", pred)
    record = score(cfg, tmp_path / "pred", tmp_path)["models"][0]
    assert record["metrics"]["mIoU"] == pytest.approx((14 / 20 + 12 / 16) / 2)
    assert record["metrics"]["aAcc"] == pytest.approx(26 / 32)
    assert record["metrics"]["mDice"] == pytest.approx((28 / 34 + 24 / 28) / 2)
    assert record["metrics"]["mAcc"] == pytest.approx((14 / 16 + 12 / 16) / 2)
    assert [row["IoU"] for row in record["per_class"][:2]] == pytest.approx([0.7, 0.75])
    assert record["per_class"][2]["IoU"] is None  # NaN, written as null
    assert record["confusion_matrix"] == [[14, 0, 0, 2], [4, 12, 0, 0], [0, 0, 0, 0]]
    assert record["per_image"] == {"intersection": [[14, 12, 0]], "union": [[20, 16, 0]]}


def test_category_iou_by_hand():
    """road 10 px: 6 road, 2 sidewalk, 2 void. person 6: 3 person, 1 rider, 2 car. car 4: 3 car, 1 truck.
    sky 3: 2 sky, 1 building. flat: TP 8, FN 2 -> 0.8. human: TP 4, FN 2 -> 4/6. vehicle: TP 4, FP 2 -> 4/6.
    sky: TP 2, FN 1 -> 2/3. construction: FP 1 only -> 0. nature and object: absent -> NaN."""
    index = {name: i for i, name in enumerate(CLASSES)}
    matrix = np.zeros((19, 20), np.int64)
    for gt, pred, count in [("road", "road", 6), ("road", "sidewalk", 2), ("road", 19, 2), ("person", "person", 3),
                            ("person", "rider", 1), ("person", "car", 2), ("car", "car", 3), ("car", "truck", 1),
                            ("sky", "sky", 2), ("sky", "building", 1)]:
        matrix[index[gt], index.get(pred, pred)] += count
    scores = category_iou(matrix, CATEGORIES)
    assert scores["flat"] == pytest.approx(0.8)
    assert scores["human"] == pytest.approx(4 / 6) and scores["vehicle"] == pytest.approx(4 / 6)
    assert scores["sky"] == pytest.approx(2 / 3) and scores["construction"] == 0.0
    assert np.isnan(scores["nature"]) and np.isnan(scores["object"])


def test_ade20k_predictions_in_either_encoding(tmp_path):
    cfg = suite(tmp_path, name="ade20k", root=str(make_ade20k(tmp_path / "ade")))
    trains = write_predictions(cfg, tmp_path / "trains")
    assert score(cfg, trains, tmp_path / "a")["models"][0]["metrics"]["mIoU"] == 1.0
    # the annotation files themselves: 1..150 with 0 = other, as the ADE20K challenge takes submissions
    native = tmp_path / "native"
    native.mkdir()
    for path in sorted((tmp_path / "ade/ADEChallengeData2016/annotations/validation").glob("*.png")):
        native.joinpath(path.name).write_bytes(path.read_bytes())
    record = score(cfg, native, tmp_path / "b")["models"][0]
    assert record["metrics"]["mIoU"] == 1.0 and record["evaluation"]["label_space"] == "dataset"
    shifted = score(cfg, native, tmp_path / "c", label_space="train")["models"][0]
    assert shifted["metrics"]["mIoU"] < 0.1  # the same files read as train ids are off by one


def test_ambiguous_predictions_ask_for_the_label_space(tmp_path):
    cfg = suite(tmp_path, name="ade20k", root=str(make_ade20k(tmp_path / "ade")))
    dataset = build_dataset(cfg.data, "val")
    for sample in dataset.samples:  # values 5 and 6 only: a class in both encodings, no void in either
        write_mask(tmp_path / "p" / f"{sample.id}.png", np.full(Image.open(sample.mask).size[::-1], 5) +
                   (np.arange(Image.open(sample.mask).size[0]) % 2))
    with pytest.raises(UserError, match="cannot tell whether the predictions hold train ids .*label_space=train"):
        score(cfg, tmp_path / "p", tmp_path)
    assert score(cfg, tmp_path / "p", tmp_path / "b", label_space="dataset")["models"][0]["metrics"]["mIoU"] == 0


def test_missing_extra_and_bad_prediction_files_are_named(tmp_path):
    cfg = suite(tmp_path, name="voc", root=str(make_voc(tmp_path / "voc")))
    pred = write_predictions(cfg, tmp_path / "pred")
    (pred / "2007_000042.png").unlink()
    with pytest.raises(UserError, match=r"no prediction for 1 of 3 images of voc val, e\.g\. 2007_000042\.png"):
        score(cfg, pred, tmp_path)
    write_mask(pred / "2007_000042.png", np.zeros((HEIGHT, WIDTH)))
    write_mask(pred / "2008_000001.png", np.zeros((HEIGHT, WIDTH)))
    with pytest.raises(UserError, match=r"1 prediction file matches no image of voc val: .*2008_000001\.png"):
        score(cfg, pred, tmp_path)
    (pred / "2008_000001.png").unlink()
    (pred / "2007_000033.png").rename(pred / "2007_000033_leftover.png")
    write_mask(pred / "a" / "2007_000033.png", np.zeros((HEIGHT, WIDTH)))
    write_mask(pred / "b" / "2007_000033.png", np.zeros((HEIGHT, WIDTH)))
    with pytest.raises(UserError, match="image 2007_000033 has 2 prediction files"):
        score(cfg, pred, tmp_path)
    (pred / "b" / "2007_000033.png").unlink()
    (pred / "2007_000033_leftover.png").unlink()
    write_mask(pred / "2007_000061.png", np.zeros((HEIGHT, WIDTH - 1)))
    with pytest.raises(UserError, match=r"2007_000061\.png: prediction is 63x32 but the ground truth"):
        score(cfg, pred, tmp_path)
    Image.new("RGB", (WIDTH, HEIGHT)).save(pred / "2007_000061.png")
    with pytest.raises(UserError, match=r"2007_000061\.png: unreadable prediction: mask mode is RGB"):
        score(cfg, pred, tmp_path)
    write_mask(pred / "2007_000061.png", stripes((0,) * 8))
    assert score(cfg, pred, tmp_path)["models"][0]["evaluation"]["images"] == 3
    with pytest.raises(UserError, match="is not a folder"):
        score(cfg, tmp_path / "nowhere", tmp_path)


def test_score_a_suite_loaded_from_its_file(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    cfg = load_config(["suite=cityscapes", f"data.root={root}", "tracking.enabled=false", "progress=false"])
    results = score(cfg, write_predictions(cfg, tmp_path / "p"), tmp_path)
    assert results["suite"]["name"] == "cityscapes" and results["models"][0]["metrics"]["mIoU"] == 1.0
    assert set(results) >= {"schema_version", "suite", "dataset", "convention", "environment", "mlflow", "models"}
