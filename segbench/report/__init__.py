"""Reports: leaderboard rows from results (with their protocol), tables (Markdown, CSV), plots, the static site's
HTML pages from the Jinja2 templates (filters, settings, protocol), exports other tools read (model cards'
model-index, MMSegmentation metafiles, RobustBench files), and the console tables. May import the packages above
it in the flow (``core``, ``config``, ``metrics``, ``results``), never a model."""
