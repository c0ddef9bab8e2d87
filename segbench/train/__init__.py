"""Training: the loss registry, the iteration-based loop with its poly schedule and mixed precision, and the
training state that lets a run resume exactly.

Owns: ``losses`` (``LOSSES``: cross-entropy, focal, Dice and their weighted sums), ``loop`` (the iteration loop,
poly learning-rate decay), ``state`` (the training state for resume, bit for bit on the CPU).
Imports: segbench.errors, segbench.core, segbench.config
"""
