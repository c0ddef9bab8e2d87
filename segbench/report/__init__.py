"""Reports: leaderboard rows from results, tables (Markdown, CSV), plots, HTML pages from the Jinja2 templates, and
the console tables. May import ``core`` and ``results``."""
