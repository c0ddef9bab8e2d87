"""results.json's speed and deployment records (part of segbench.results.schema, which imports
them; read and written only through it)."""

from __future__ import annotations

from typing import Any, Literal

from segbench.config.typed import Record

Precision = Literal["fp32", "bf16", "fp16"]  # fp32, or bf16 / fp16 autocast


class BackendEvaluation(Record):
    backend: str  # eager, compile, onnxruntime or tensorrt (segbench.deploy.backends)
    # ok; reference (eager: the record's own evaluation); skipped (cannot run here)
    status: Literal["ok", "reference", "skipped"] = "ok"
    reason: str | None = None  # skipped: why
    precision: Precision | None = None
    provider: str | None = None  # torch, an ONNX Runtime execution provider, TensorRT
    metrics: dict[str, float | None] = {}  # mIoU, ... (fractions) under this backend
    difference: dict[str, float | None] = {}  # this backend minus eager (fractions)
    max_abs_logit_difference: float | None = None  # against eager, over the first evaluated batch
    prediction_agreement: float | None = None  # share of the first batch's pixels with eager's argmax
    images: int | None = None  # evaluated images
    seconds: float | None = None  # wall time of this backend's evaluation (building it included)
    details: dict[str, Any] = {}  # what ran: exporter, opset, input shapes, ...


class Speed(Record):
    images_per_second: float  # samples per second: median over the timed repeats
    images_per_second_repeats: list[float] | None = None  # one figure per timed repeat
    spread: float | None = None  # (max - min) / median over the repeats
    batch_size: int | None = None  # as measured (after any out-of-memory halving)
    requested_batch_size: int | None = None  # as asked for
    oom_halvings: int | None = None  # how often an out-of-memory error halved the batch
    input_shape: list[int] | None = None  # batch, channels, height, width
    latency_ms_p50: float | None = None  # per batch, over all timed iterations
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    warmup_iters: int | None = None  # untimed iterations first
    timed_iters: int | None = None  # per repeat
    repeats: int | None = None  # timed repeats
    params: int | None = None  # parameters of the model
    gflops_per_image: float | None = None  # forward FLOPs per image / 1e9 (a multiply-add is 2)
    peak_memory_mb: float | None = None  # peak memory of the forward pass
    # not_measured: the backend allocates outside torch's allocator
    memory_measure: Literal["cuda_max_allocated", "cpu_peak_rss_growth", "not_measured"] | None = None
    device: str | None = None  # torch device
    precision: Precision | None = None
    memory_format: Literal["contiguous", "channels_last"] | None = None
    compile: bool | None = None  # torch.compile (backend compile)
    timer: Literal["perf_counter", "cuda_event"] | None = None  # the host clock, or CUDA events on the GPU
    backend: str | None = None  # eager, compile, onnxruntime or tensorrt; null in older files: eager (or compile)
    provider: str | None = None  # torch, an ONNX Runtime execution provider (CPUExecutionProvider, ...), TensorRT
    backend_details: dict[str, Any] = {}  # exporter, opset, input shapes, threads, ...
    min_seconds: float | None = None  # the minimum timed duration asked for
    timed_seconds: float | None = None  # the timed duration measured, all blocks
    isolated: bool | None = None  # measured in a fresh process of its own (segbench bench)
    extra: dict[str, Any] = {}  # anything else the measurement recorded
    world_size: int | None = None  # torchrun: processes that each timed the model on their device
    images_per_second_per_rank: list[float] | None = None  # torchrun: each rank's images/s
    aggregate_images_per_second: float | None = None  # torchrun: their sum, the job's data-parallel throughput
    reference_model: str | None = None  # the suite's model timed alternately with this one, block by block
    reference_images_per_second_repeats: list[float] | None = None  # its images/s in the block after each repeat


class SkippedBackend(Record):
    backend: str  # a backend of bench.backends that was not timed
    reason: str  # why: cannot run here (TensorRT without CUDA, ...), or its export failed
