"""Running a suite: the orchestration of one command, from the checks before any work to the logged results.

Owns: ``validation`` (a suite checked against every registry before work starts), ``session`` (what a command
shares: output folder, MLflow parent run, device, fingerprint), ``runner`` (``run`` and ``bench``: each model
built, trained, evaluated, timed and logged), ``score`` (``segbench score`` of prediction files), ``logged`` (what
a run logs to MLflow, live or later with ``segbench log``), ``resume`` (continuing an interrupted run), ``sweep``
(shards of a suite as job arrays).
Imports: segbench.errors, segbench.core, segbench.config, segbench.data, segbench.metrics, segbench.results,
segbench.models, segbench.train, segbench.deploy, segbench.evaluation, segbench.report
"""
