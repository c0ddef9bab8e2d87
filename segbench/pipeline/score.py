"""``segbench score``: score a folder of prediction PNGs made by any tool against a suite's ground truth.

Predictions are single-channel PNGs (L or P mode), one per image of the validation split, named
``{id}.png`` or ``{image stem}.png`` (e.g. ``frankfurt_000000_000019.png`` or
``frankfurt_000000_000019_leftImg8bit.png``), anywhere under the folder. Their values are either
train ids (0..K-1, ``label_space="train"``) or the data set's own encoding (``"dataset"``: Cityscapes
label ids, ADE20K's 1..150), converted with the same table as the ground truth. A ground-truth pixel
predicted as anything that is not a class (a void id, 255, an out-of-range value) is a false
negative, as in the official Cityscapes evaluation: the confusion matrix gets one extra "void"
column. ``"auto"`` picks the space in which fewer labelled pixels are predicted as void.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from segbench.config.schema import SuiteConfig
from segbench.data.base import LabelMap
from segbench.data.checks import describe_error, read_mask
from segbench.data.pairs import SegmentationFiles
from segbench.data.registry import build_dataset, dataset_info
from segbench.errors import UserError
from segbench.metrics import confusion as seg_metrics
from segbench.metrics.confusion import SegMetrics, compute_metrics, nanmean
from segbench.metrics.scored import ScoredImage, ScoredPassport, lookup
from segbench.pipeline.logged import model_metrics, per_class_csv
from segbench.pipeline.session import Session
from segbench.report.console import leaderboard, print_leaderboard
from segbench.results.schema import Dataset, Evaluation, ModelRecord, per_class_frame

LABEL_SPACES = ("auto", "train", "dataset")
RAW_VALUES = 256  # prediction PNGs are 8-bit
SHOWN = 3


def match_predictions(dataset: SegmentationFiles, pred_dir: Path, allow_extra: bool = False) -> list[Path]:
    """The prediction file of every sample (by relative path, id or image stem); a missing or extra file is an error."""
    files = sorted(p for p in pred_dir.rglob("*") if p.suffix.lower() == ".png" and p.is_file())
    by_path = {p.relative_to(pred_dir).with_suffix("").as_posix(): p for p in files}
    by_stem: dict[str, list[Path]] = {}
    for path in files:
        by_stem.setdefault(path.stem, []).append(path)
    matched, missing, owner = [], [], {}
    for sample in dataset.samples:
        if sample.id in by_path:
            hits = [by_path[sample.id]]
        else:
            stems = dict.fromkeys((sample.id.rsplit("/", 1)[-1], sample.image.stem))
            hits = [path for stem in stems for path in by_stem.get(stem, [])]
        if not hits:
            missing.append(sample.id)
        elif len(hits) > 1:
            raise UserError(f"{pred_dir}: image {sample.id} has {len(hits)} prediction files: "
                            f"{', '.join(str(p) for p in hits[:SHOWN])}")
        elif hits[0] in owner:
            raise UserError(f"{hits[0]}: this prediction matches two images, {owner[hits[0]]} and {sample.id}; "
                            "mirror the image subfolders in the prediction folder")
        else:
            owner[hits[0]] = sample.id
            matched.append(hits[0])
    where = f"{dataset.name} {dataset.split}"
    if missing:
        raise UserError(f"{pred_dir}: no prediction for {len(missing)} of {len(dataset)} images of {where}, e.g. "
                        f"{', '.join(f'{i}.png' for i in missing[:SHOWN])}")
    extra = [p for p in files if p not in owner]
    if extra and not allow_extra:
        verb = "files match" if len(extra) > 1 else "file matches"
        raise UserError(f"{pred_dir}: {len(extra)} prediction {verb} no image of {where}: "
                        f"{', '.join(str(p) for p in extra[:SHOWN])}")
    return matched


PREFETCH = 3  # images read and prepared ahead by as many threads (Pillow, numpy and torch release the GIL)


def read_pair(dataset: SegmentationFiles, path: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(ground-truth class indices, as ``dataset.target`` but 8-bit where the ignore index allows; the raw 8-bit
    prediction) of image ``index``; a prediction that cannot be read or differs in size from its ground truth is
    a UserError."""
    sample = dataset.samples[index]
    table = sample.labels.table
    target = lookup(read_mask(sample.mask), table.astype(np.uint8 if table.max() < RAW_VALUES else np.uint16))
    try:
        pred = read_mask(path)
    except Exception as exc:  # a damaged file can fail in any of Pillow's decoders
        raise UserError(f"{path}: unreadable prediction: {describe_error(exc)}") from None
    if pred.shape != target.shape:
        raise UserError(f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} but the ground truth "
                        f"{sample.mask.name} is {target.shape[1]}x{target.shape[0]}")
    return target, pred


def count_image(dataset: SegmentationFiles, path: Path, index: int, num_classes: int,
                passports: dict[str, tuple[ScoredPassport, np.ndarray]]) -> tuple[np.ndarray, dict[str, ScoredImage]]:
    """Image ``index``'s K x 256 count of ground-truth class (rows) against raw 8-bit prediction (columns), and
    for each label space's passport (with its value -> class table) the image ``prepare``d; safe in a thread."""
    target, pred = read_pair(dataset, path, index)
    prepared = {space: passport.prepare(index, pred, classes, target)
                for space, (passport, classes) in passports.items()}
    for image in prepared.values():
        if (counts := image.raw(num_classes)) is not None:
            return counts, prepared
    # ground-truth class (K: ignored) x 256 + raw prediction
    key = np.minimum(target, num_classes).astype(np.int32)
    key <<= 8
    key |= pred
    counts = torch.bincount(torch.from_numpy(key).reshape(-1), minlength=(num_classes + 1) * RAW_VALUES)
    return counts.numpy()[: num_classes * RAW_VALUES].reshape(num_classes, -1), prepared


def accumulate(dataset: SegmentationFiles, predictions: list[Path], num_classes: int,
               progress: bool = True, passports: dict | None = None
               ) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The K x 256 matrix of ground-truth class (rows) against raw 8-bit predicted value (columns), and for
    each label space the per-image intersections and unions (images x K, for bootstrap intervals).
    ``passports``: label space -> ScoredPassport, updated with each image in that space."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    k = num_classes
    tables = {space: prediction_table(space, dataset.encoding, k) for space in LABEL_SPACES[1:]}
    # k <= 255: 8-bit class maps
    scored = {space: (passport, tables[space].astype(np.uint8)) for space, passport in (passports or {}).items()}
    per_image: dict[str, tuple[list, list]] = {space: ([], []) for space in tables}
    raw = np.zeros((k, RAW_VALUES), dtype=np.int64)
    with ThreadPoolExecutor(PREFETCH) as pool:
        ahead: deque = deque()
        for index in tqdm(range(len(predictions)), desc="scoring", leave=False, disable=None if progress else True):
            while len(ahead) < PREFETCH and index + len(ahead) < len(predictions):
                ahead.append(pool.submit(count_image, dataset, predictions[index + len(ahead)], index + len(ahead),
                                         k, scored))
            counts, prepared = ahead.popleft().result()
            raw += counts
            for space, table in tables.items():
                matrix = collapse(counts, table)
                tp = np.diag(matrix)
                per_image[space][0].append(tp)
                per_image[space][1].append(matrix.sum(axis=1) + matrix[:, :k].sum(axis=0) - tp)
                if space in scored:
                    scored[space][0].add(prepared[space], matrix)
    return raw, {space: (np.array(i).reshape(-1, k), np.array(u).reshape(-1, k)) for space, (i, u) in per_image.items()}


def prediction_table(space: str, encoding: LabelMap, num_classes: int) -> np.ndarray:
    """Raw predicted value (0..255) to class index, or ``num_classes`` (the void column) for non-classes."""
    values = np.arange(RAW_VALUES)
    if space == "train":
        return np.where(values < num_classes, values, num_classes)
    keep = encoding.defined & (encoding.table >= 0) & (encoding.table < num_classes)
    return np.where(keep, encoding.table, num_classes)


def choose_space(raw: np.ndarray, encoding: LabelMap, label_space: str, where: str) -> str:
    """``label_space`` itself, or for "auto" the space with fewer labelled pixels predicted as void."""
    if label_space != "auto":
        return label_space
    k = raw.shape[0]
    train, native = prediction_table("train", encoding, k), prediction_table("dataset", encoding, k)
    used = raw.sum(axis=0) > 0
    if (train[used] == native[used]).all():
        return "train"
    void_train, void_native = raw[:, train == k].sum(), raw[:, native == k].sum()
    if void_train == void_native:
        raise UserError(f"{where}: cannot tell whether the predictions hold train ids (0..{k - 1}) or "
                        f"{encoding.name}; pass label_space=train or label_space=dataset")
    return "train" if void_train < void_native else "dataset"


def first_space(dataset: SegmentationFiles, predictions: list[Path], num_classes: int, label_space: str,
                where: str) -> str:
    """``label_space``, or for "auto" the space its first image's predictions are in (train where they cannot
    tell): the whole split decides in the end (``choose_space``)."""
    if label_space != "auto" or not predictions:
        return "train" if label_space == "auto" else label_space
    raw, _ = accumulate(dataset, predictions[:1], num_classes, progress=False)
    try:
        return choose_space(raw, dataset.encoding, label_space, where)
    except UserError:
        return "train"


def collapse(raw: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The K x (K+1) confusion matrix (last column: void predictions) from the K x 256 raw matrix."""
    k = raw.shape[0]
    matrix = np.zeros((k, k + 1), dtype=np.int64)
    np.add.at(matrix.T, table, raw.T)
    return matrix


def metrics_with_void(matrix: np.ndarray) -> SegMetrics:
    """segbench's metrics from a K x (K+1) matrix whose last column counts misses predicted as void."""
    k = matrix.shape[0]
    square = np.zeros((k + 1, k + 1), dtype=np.int64)
    square[:k] = matrix
    full = compute_metrics(square)  # the void row is empty: its class is NaN or 0 and is cut off below
    iou, dice, acc = full.iou[:k], full.dice[:k], full.acc[:k]
    return SegMetrics(mIoU=nanmean(iou), mDice=nanmean(dice), aAcc=full.aAcc, mAcc=nanmean(acc),
                      fwIoU=full.fwIoU, iou=iou, dice=dice, acc=acc, support=full.support[:k])


def score_predictions(cfg: SuiteConfig, pred_dir: Path, label_space: str = "auto") -> Path:
    """Score the prediction PNGs in ``pred_dir`` against the suite's validation split; every file is read and
    checked before the output folder and MLflow runs are made. Write results.json, log it, return its path."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise UserError(f"pred_dir: {pred_dir} is not a folder of prediction PNGs")
    if label_space not in LABEL_SPACES:
        raise UserError(f"label_space: expected one of {', '.join(LABEL_SPACES)}, got '{label_space}'")
    info = dataset_info(cfg.data)
    dataset = build_dataset(cfg.data, cfg.data.val_split, cfg.seed)
    if not isinstance(dataset, SegmentationFiles):
        raise UserError(f"score: data set '{cfg.data.name}' has no ground-truth files; "
                        "score against an on-disk data set (cityscapes, ade20k, voc, folder)")
    start = time.perf_counter()
    predictions = match_predictions(dataset, pred_dir, allow_extra=cfg.data.skip_bad and dataset.skipped > 0)
    where = f"{pred_dir} ({dataset.name} {dataset.split})"
    # the passport is measured in one label space: the one asked for, or for "auto" the first image's
    guess = first_space(dataset, predictions, info.num_classes, label_space, where)
    passports = {guess: ScoredPassport(cfg, info, dataset)} if cfg.eval.passport else {}
    raw, per_image = accumulate(dataset, predictions, info.num_classes, cfg.progress, passports)
    space = choose_space(raw, dataset.encoding, label_space, where)
    if passports and space not in passports:  # the whole split says otherwise than its first image: measure again
        passports = {space: ScoredPassport(cfg, info, dataset)}
        accumulate(dataset, predictions, info.num_classes, cfg.progress, passports)
    matrix = collapse(raw, prediction_table(space, dataset.encoding, info.num_classes))
    scores = metrics_with_void(matrix)
    extra_metrics, passport = (passports[space].finish(matrix, scores, per_image[space])
                               if passports else ({}, None))
    seconds = time.perf_counter() - start

    name = pred_dir.resolve().name
    record = ModelRecord(name=name, source="predictions")
    record.set_scores(info.classes, scores, matrix, *per_image[space], info.categories, extra_metrics, passport)
    record.evaluation = Evaluation(
        mode="predictions", split=dataset.split, images=len(predictions), seconds=seconds,
        pred_dir=str(pred_dir.resolve()), label_space=space, label_space_detected=label_space == "auto",
        void_pixels=int(matrix[:, -1].sum()), skipped=dataset.skipped)

    with Session(cfg, "score", torch.device("cpu")) as session:
        tracker = session.tracker
        child = tracker.start(name, parent=session.parent, params={"label_space": space, "images": len(predictions),
                                                                   "pred_dir": record.evaluation.pred_dir})
        tracker.log(child, metrics=model_metrics(record))
        csv_path = session.work_dir / per_class_csv(name)
        per_class_frame(record.per_class).to_csv(csv_path, index=False)
        tracker.artifact(child, csv_path)
        record.mlflow_run_id = child
        tracker.end(child, "FINISHED")
        results = session.results(
            dataset=Dataset(name=info.name, classes=list(info.classes), split=dataset.split),
            convention={**seg_metrics.convention(info.num_classes, info.ignore_index,
                                                 f"{info.name}-{info.num_classes}"),
                        "void_prediction": "false_negative"},
            models=[record],
            metric_definitions=seg_metrics.definitions(record.metrics))
        path = session.finish("results.json", results)
    print_leaderboard(leaderboard(results, cfg.eval.metrics), f"{cfg.name}: predictions in {pred_dir}")
    session.tracker.check_logged(path)
    return path
