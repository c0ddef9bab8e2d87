"""segbench: benchmarking and model-zoo evaluation for semantic segmentation."""

__version__ = "0.1.0"
