"""Evaluation: the loop over a split in the suite's mode (whole, slide, resize, multi-scale, flip), CRF
post-processing, saved predictions, ``segbench score`` of prediction files, and deployment parity. May import
``core``, ``config``, ``data``, ``models``, ``metrics``, ``deploy`` and ``results``."""
