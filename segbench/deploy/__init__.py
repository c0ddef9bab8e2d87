"""Deployment and speed: backends (eager, torch.compile, ONNX Runtime, TensorRT), the timing protocol and a
suite's speed measurement. May import ``core``, ``config``, ``models`` and ``results``."""
