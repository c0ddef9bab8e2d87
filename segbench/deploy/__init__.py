"""Deployment and speed: backends (eager, torch.compile, ONNX Runtime, TensorRT), the timing protocol and a
suite's speed measurement.

Owns: ``backends`` (``BACKENDS``: a model as it will be deployed), ``deployed`` (``Deployed`` and
``BackendUnavailable``), ``onnx`` (export with torch.onnx, run with ONNX Runtime), ``tensorrt`` (TensorRT engines
on a CUDA GPU), ``timing`` (the timing protocol: throughput measured so that it can be signed), ``speed`` (a suite's
speed of one model: one record per backend and batch size, in this process or a fresh one).
Imports: segbench.errors, segbench.core, segbench.config, segbench.data, segbench.results, segbench.models
"""
