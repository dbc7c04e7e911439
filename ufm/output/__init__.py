"""Writing a run: the run directory (atomic files), summary.json, the end-of-run table."""
