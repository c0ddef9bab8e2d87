"""Evaluation: the loop over a split in the suite's mode (whole, slide, resize, multi-scale, flip), CRF
post-processing, saved predictions, robustness and deployment parity.

Owns: ``loop`` (inference over a split into one streaming confusion matrix and the passport), ``modes`` (whole
image, sliding window or resized; scales and flip), ``crf`` (fully connected CRF, as in DeepLab v1),
``predictions`` (predictions saved to look at and to submit), ``robustness`` (evaluation under corruption and per
adverse condition), ``parity`` (the evaluation repeated under each deployment backend).
Imports: segbench.errors, segbench.core, segbench.config, segbench.data, segbench.metrics, segbench.results,
segbench.train, segbench.deploy
"""
