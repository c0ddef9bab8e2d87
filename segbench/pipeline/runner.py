"""``segbench run`` and ``segbench bench``: for each model of a suite, build, train, evaluate, time and log it."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler, Subset

from segbench.config.schema import SuiteConfig, config_hash, to_dict
from segbench.config.typed import plain
from segbench.core.distributed import (
    World,
    device_for,
    gather,
    launched,
    local_batch,
    process_group,
    same_as_rank0,
    shard,
)
from segbench.core.environment import resolve_device
from segbench.core.names import inside
from segbench.data.registry import DatasetInfo, build_dataset, check_batchable, dataset_info, make_loader
from segbench.deploy.speed import speed_records, time_isolated, time_model
from segbench.errors import UserError, warn
from segbench.evaluation.loop import evaluate, score_split
from segbench.evaluation.modes import describe_mode
from segbench.evaluation.parity import evaluate_backends
from segbench.evaluation.predictions import PredictionWriter
from segbench.evaluation.robustness import adverse_conditions, check_corruptions, evaluate_corruptions
from segbench.metrics import confusion as seg_metrics
from segbench.metrics.passport import Passport
from segbench.models.checkpoints import WEIGHTS_FILE, save_checkpoint, sha256_file
from segbench.models.factory import build
from segbench.models.registry import ModelSpec, parse_spec
from segbench.pipeline.logged import model_metrics, model_series, per_class_csv, speed_metrics, weights_params
from segbench.pipeline.resume import (
    find_resume,
    finished_record,
    keep_record,
    model_run,
    note_model_run,
    state_writer,
    training_state,
)
from segbench.pipeline.session import DEFAULT_ROOT, Session
from segbench.pipeline.sweep import parse_shard
from segbench.report.console import leaderboard, print_leaderboard, print_speed_table
from segbench.report.robustness import print_robustness
from segbench.results.robustness import Robustness
from segbench.results.schema import (
    Checkpoint,
    DataIssues,
    Evaluation,
    ModelRecord,
    Results,
    Training,
    per_class_frame,
)
from segbench.results.schema import (
    Dataset as DatasetRecord,
)
from segbench.results.speed import Speed
from segbench.train.loop import train
from segbench.train.losses import build_loss


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _build(spec: ModelSpec, cfg: SuiteConfig, info: DatasetInfo) -> tuple[torch.nn.Module, ModelRecord]:
    """The model with its weights loaded, and the start of its record: name, parameters, weights and origin."""
    built = build(spec, info.classes, "load", cfg=cfg)
    for note in built.notes:
        warn(note)
    return built.module, ModelRecord(name=spec.name, arch=spec.arch, backbone=spec.backbone,
                                     params=sum(p.numel() for p in built.module.parameters()),
                                     weights=plain(built.files, nan_as_null=False), origin=plain(built.record()))


def _train(model: torch.nn.Module, spec: ModelSpec, info: DatasetInfo, train_set: Dataset, session: Session,
           run_id: str | None, val_set: Dataset | None = None) -> tuple[torch.nn.Module, Training, Checkpoint | None]:
    """Train ``model`` (under DistributedDataParallel across the ranks of a torchrun job); return the trained
    model, its training record and, where it was saved (rank 0), its checkpoint. ``val_set`` is validated on
    (train.eval_every)."""
    cfg, world, device = session.cfg, session.world, session.device
    batch = local_batch(cfg.train.batch_size, world, "train.batch_size")
    sampler = DistributedSampler(train_set, world.size, world.rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True) if world.distributed else None
    loader = make_loader(train_set, batch, True, cfg.data.num_workers, device, cfg.seed + world.rank, sampler)
    loss_fn = build_loss(cfg.train.loss, info.ignore_index, cfg.train.class_weights)
    net = model
    if world.distributed:
        if cfg.train.sync_bn:
            model = net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(model.to(device), device_ids=[device] if device.type == "cuda" else None)
    state_dir = Path(gather(str(session.work_dir))[0]) if session.resumed else None  # every rank reads rank 0's
    validate, val_images = _validator(spec, info, val_set, session) if cfg.train.eval_every and val_set is not None \
        else (None, None)
    log = train(net, loader, loss_fn, cfg.train, device, desc=f"train {spec.name}",
                progress=cfg.progress and world.main, state=training_state(state_dir, spec.name),
                save=state_writer(session.work_dir, spec.name), validate=validate)
    same_as_rank0(model)
    record = Training(iters=log.iters, seconds=log.seconds, final_loss=log.final_loss, losses=list(log.losses),
                      data_wait_share=log.data_seconds / log.seconds, batch_size=cfg.train.batch_size,
                      world_size=world.size, precision=cfg.train.precision, channels_last=cfg.train.channels_last,
                      resumed_at=log.resumed_at or None)
    if cfg.train.eval_every:
        record.val_curve, record.val_images = plain(log.val_curve), val_images
        record.keep, record.best_iter = cfg.train.keep, log.best_iter
    session.tracker.log(run_id, series=model_series(record))
    checkpoint = None
    if cfg.train.save_checkpoint and session.work_dir is not None:
        folder = inside(session.work_dir / "checkpoints", spec.name)
        save_checkpoint(model, folder, {"model": spec.name, "arch": spec.arch, "backbone": spec.backbone,
                                        "num_classes": info.num_classes, "classes": list(info.classes),
                                        "suite": cfg.name, "config": to_dict(cfg)})
        checkpoint = Checkpoint(path=str(folder.relative_to(session.work_dir)),
                                sha256=sha256_file(folder / WEIGHTS_FILE))
    return model, record, checkpoint


def _validator(spec: ModelSpec, info: DatasetInfo, val_set: Dataset,
               session: Session) -> tuple[Callable[[torch.nn.Module], float], int]:
    """``train.eval_every``: the model's mIoU on the first ``train.eval_samples`` images of the split (in the
    suite's evaluation mode, without the passport), and how many images that is."""
    cfg = session.cfg
    part = Subset(val_set, range(min(cfg.train.eval_samples or len(val_set), len(val_set))))
    loader = make_loader(part, min(cfg.eval.batch_size, len(part)), False, 0, session.device, cfg.seed)

    def validate(model: torch.nn.Module) -> float:
        result = evaluate(getattr(model, "module", model), loader, info.num_classes, info.ignore_index,
                          session.device, cfg.eval, desc=f"validate {spec.name}", progress=False)
        return score_split(result, part).metrics["mIoU"]
    return validate, len(part)


def _evaluate(model: torch.nn.Module, spec: ModelSpec, info: DatasetInfo, val_set: Dataset, session: Session,
              record: ModelRecord) -> list[str]:
    """Evaluate ``model`` on the split, each rank on its contiguous shard, into ``record``: metrics, per-class
    table, confusion matrix, per-image statistics (in data set order), timing and robustness, exact for any number
    of ranks. Return the overlay images written."""
    cfg, world, device = session.cfg, session.world, session.device
    indices = shard(len(val_set), world)
    passport = Passport.build(cfg.eval, cfg.data, info, val_set, device)
    data = passport.dataset(val_set) if passport else val_set
    part = Subset(data, indices) if world.distributed else data
    out_dir = Path(gather(str(session.work_dir))[0])  # rank 0's folder, for every rank's predictions
    writer = (PredictionWriter(inside(out_dir / "predictions", spec.name), val_set, info, cfg.eval.overlays,
                               cfg.data.label_map, first=indices.start) if cfg.eval.save_predictions else None)
    loader = make_loader(part, cfg.eval.batch_size, False, cfg.data.num_workers, device, cfg.seed)
    result = evaluate(model, loader, info.num_classes, info.ignore_index, device, cfg.eval, desc=f"eval {spec.name}",
                      progress=cfg.progress and world.main, passport=passport, writer=writer)  # sums the counts
    split = score_split(result, val_set, writer, out_dir)  # every rank's rows, in data set order
    images = len(split.intersection)
    if images != len(val_set):
        raise RuntimeError(f"{spec.name}: {images} images evaluated over {world.size} processes, expected "
                           f"{len(val_set)}")
    seconds = max(gather(result.seconds))
    record.set_scores(info.classes, split.scores, split.matrix, split.intersection, split.union, info.categories,
                      split.passport_metrics, split.passport)
    record.invalid_reason = result.invalid_reason or None
    record.evaluation = Evaluation(
        **describe_mode(cfg.eval), crf=cfg.eval.crf.enabled, precision=cfg.eval.precision,
        channels_last=cfg.eval.channels_last, split=cfg.data.val_split, images=images, seconds=seconds,
        images_per_second=images / seconds if seconds > 0 else float("nan"),
        forward_images_per_second=result.forward_images_per_second, forward_share=result.forward_share,
        data_wait_share=result.data_share, world_size=world.size, images_per_second_per_rank=gather(
            result.images_per_second))
    adverse = adverse_conditions(val_set, split.intersection, split.union)
    if cfg.eval.corruptions:
        record.robustness = evaluate_corruptions(model, val_set, info, cfg, world, device, record,
                                                 f"eval {spec.name}", cfg.progress and world.main)
        record.robustness.adverse = adverse
        record.metrics |= {"mPC": record.robustness.mPC, "rPC": record.robustness.rPC}
    elif adverse:
        record.robustness = Robustness(adverse=adverse)
    return writer.overlay_paths if writer else []


def run_model(spec: ModelSpec, info: DatasetInfo, train_set: Dataset | None, val_set: Dataset,
              session: Session) -> ModelRecord:
    """Train (if the suite says so), evaluate and time one model; return its results.json record."""
    cfg, tracker = session.cfg, session.tracker
    seed_everything(cfg.seed)
    model, record = _build(spec, cfg, info)
    previous = model_run(session.work_dir, spec.name) if session.resumed and session.work_dir else None
    run_id = tracker.start(spec.name, parent=session.parent, run_id=previous,
                           params=None if previous else {"model": spec.name, "source": spec.source,
                                                         "arch": spec.arch, "backbone": spec.backbone}
                           | weights_params(record.weights))
    if session.work_dir is not None:
        note_model_run(session.work_dir, spec.name, run_id)
    try:
        if train_set is not None:
            model, record.train, record.checkpoint = _train(model, spec, info, train_set, session, run_id, val_set)
        for overlay in _evaluate(model, spec, info, val_set, session, record):
            tracker.artifact(run_id, overlay)
        record.data = DataIssues(
            skipped=getattr(val_set, "skipped", 0) + getattr(train_set, "skipped", 0),
            problems=[str(p) for p in (getattr(train_set, "problems", []) + getattr(val_set, "problems", []))[:20]],
            classes_without_pixels=[row.name for row in record.per_class if row.support == 0])
        if cfg.eval.backends != ["eager"]:
            record.evaluation.backends = evaluate_backends(spec.name, model, record, cfg, info, val_set,
                                                           session.device)
        if cfg.bench.enabled:
            speed, record.speed_skipped = speed_records(model, cfg, tuple(val_set[0][0].shape[-2:]),
                                                        session.device, spec.name)
            record.speed = with_ranks(speed, session.world)
        if session.work_dir is not None:
            csv_path = session.work_dir / per_class_csv(spec.name)
            per_class_frame(record.per_class).to_csv(csv_path, index=False)
            tracker.artifact(run_id, csv_path)
        tracker.log(run_id, metrics=model_metrics(record), params={"params": record.params})
        record.mlflow_run_id = run_id
        tracker.end(run_id, "FINISHED")
        return record
    except Exception:
        tracker.end(run_id, "FAILED")
        raise


def _warn_absent(dataset: Dataset) -> None:
    absent = getattr(dataset, "absent_classes", ())
    if absent:
        warn(f"{dataset.name} {dataset.split}: no pixel of class {', '.join(repr(c) for c in absent)} in "
             f"{len(dataset)} images; its IoU is NaN and left out of mIoU")


def run(cfg: SuiteConfig) -> Path | None:
    """Run every model of ``cfg``; write results.json and return its path (None on the other ranks of a job)."""
    return run_suite(cfg)[1]


def run_suite(cfg: SuiteConfig, folder: bool = True) -> tuple[Results | None, Path | None]:
    """Run every model of ``cfg``; return the typed results and the path of results.json (``folder=False``, for
    the Python API: no output folder, the results only in memory and, with tracking on, in MLflow). Both None on
    the other ranks of a job."""
    world = launched()
    device = device_for(world, resolve_device(cfg.device))
    info = dataset_info(cfg.data)
    shard = parse_shard(cfg.shard, config_hash(cfg))
    specs = [parse_spec(name) for name in (shard.select(cfg.models) if shard else cfg.models)]
    if not specs:
        raise UserError(f"shard {shard.index}/{shard.count}: the suite has only {len(cfg.models)} models, so this "
                        "shard has none; use at most as many shards as models")
    train_set = build_dataset(cfg.data, cfg.data.train_split, cfg.seed) if cfg.train.enabled else None
    val_set = build_dataset(cfg.data, cfg.data.val_split, cfg.seed)
    if train_set is not None:
        check_batchable(train_set, local_batch(cfg.train.batch_size, world, "train.batch_size"))
        if cfg.train.sync_bn and world.distributed and device.type != "cuda":
            raise UserError(f"train.sync_bn: SyncBatchNorm runs on CUDA devices, but this job runs on {device}; "
                            "set train.sync_bn=false")
    check_batchable(val_set, cfg.eval.batch_size)
    check_corruptions(cfg, val_set)
    if world.main:
        _warn_absent(val_set)
    resumed = find_resume(cfg, DEFAULT_ROOT) if folder else None
    with process_group(world, device), Session(cfg, "run", device, world, shard, folder, resume=resumed) as session:
        records = []
        for spec in specs:  # a resumed run keeps the models it finished before it was interrupted
            record = finished_record(resumed, spec.name) if resumed else None
            if record is None:
                record = run_model(spec, info, train_set, val_set, session)
                if session.work_dir is not None:
                    keep_record(session.work_dir, record)
            records.append(record)
        results = session.results(
            dataset=DatasetRecord(name=info.name, classes=list(info.classes), split=cfg.data.val_split),
            convention=seg_metrics.convention(info.num_classes, info.ignore_index, f"{info.name}-{info.num_classes}"),
            models=records,
            metric_definitions=seg_metrics.definitions({k for r in records for k in r.metrics}))
        path = session.finish("results.json", results)
    if not world.main:
        return None, None
    print_leaderboard(leaderboard(results, cfg.eval.metrics),
                      f"{cfg.name} ({session.env.device_name}, suite hash {session.suite_hash})")
    print_robustness(records, f"{cfg.name} under corruption (percent)")
    session.tracker.check_logged(path)
    return results, path


def bench(cfg: SuiteConfig) -> Path | None:
    """Time every model of ``cfg`` (random weights, no data set); write bench.json and return its path."""
    specs = [parse_spec(name) for name in cfg.models]
    image_size = tuple(cfg.bench.input_size or (cfg.data.image_size, cfg.data.image_size))
    # each model in a fresh process unless asked otherwise; a published model's weights are the model, models
    # built here are timed with random weights
    timer = time_isolated if cfg.bench.isolate else time_model
    world = launched()
    device = device_for(world, resolve_device(cfg.device))
    with process_group(world, device), Session(cfg, "bench", device, world) as session:
        records = []
        for spec in specs:
            run_id = session.tracker.start(spec.name, parent=session.parent,
                                           params={"model": spec.name, "arch": spec.arch, "backbone": spec.backbone})
            speed, skipped = timer(cfg, spec.name, image_size, session.device)
            speed = with_ranks(speed, world)
            session.tracker.log(run_id, metrics=speed_metrics(speed))
            session.tracker.end(run_id, "FINISHED")
            records.append(ModelRecord(name=spec.name, arch=spec.arch, backbone=spec.backbone,
                                       params=speed[0].params if speed else None, speed=speed,
                                       speed_skipped=skipped, mlflow_run_id=run_id))
        path = session.finish("bench.json", session.results(models=records))
    if world.main:
        print_speed_table(records, f"{cfg.name} speed ({session.env.device_name}, {session.env.threads} threads)")
    session.tracker.check_logged(path)
    return path


def with_ranks(speed: list[Speed], world: World) -> list[Speed]:
    """Speed records with every rank's images/s and their sum (the job's data-parallel throughput) when a
    torchrun job timed the model on each of its devices; unchanged for one process."""
    for record in speed if world.distributed else []:
        record.images_per_second_per_rank = rates = gather(record.images_per_second)
        record.world_size, record.aggregate_images_per_second = world.size, sum(rates)
    return speed
