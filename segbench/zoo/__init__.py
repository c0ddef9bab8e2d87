"""The model zoo: typed model cards and their verification by re-evaluation. May import everything below the
pipeline."""
