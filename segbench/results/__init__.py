"""results.json: its typed schema (with the passport and speed records), the one writer and reader, the per-class
table, and finding results files and MLflow runs. May import ``core`` only."""
