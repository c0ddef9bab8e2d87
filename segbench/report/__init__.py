"""Reports: leaderboard rows from results (with their protocol), tables, plots, the static site's HTML pages
from the Jinja2 templates, exports other tools read, and the console tables. It reads results only: never a model.

Owns: ``build`` (``segbench report``: a folder per suite that can be published as it is), ``rows`` (leaderboard
rows from results.json files or MLflow runs), ``protocol`` (what a number was measured under), ``site`` (a suite
page's settings to choose from), ``tables`` (Markdown and CSV), ``plots`` (speed against mIoU, confusion
matrices), ``html`` (the pages, from the templates), ``robustness`` (the report's robustness parts), ``exports``
(model-index, MMSegmentation metafiles, RobustBench files), ``console`` (the tables printed at the end of a run).
Imports: segbench.errors, segbench.core, segbench.config, segbench.metrics, segbench.results
"""
