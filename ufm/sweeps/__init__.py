"""Sweeps: a grid of UFM configurations (grid), run in batches on a concurrent.futures executor — a local
process pool or Dask — restartable, with one tidy results table (runner). The CLI is `python -m ufm.sweep`."""
