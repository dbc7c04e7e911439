"""Measuring and predicting neural collapse: pure math (torch, numpy; scipy, sympy and cvxpy only in the
modules that need them, imported on use). No training code.

The names below are the entry points for a researcher's own network:

- `nc_metrics(H, y, W, b)`: NC1–NC4 and companions of a feature matrix (Papyan, Han & Donoho 2020);
  `nc_metrics_streaming(batches, K, W, b)` the same from batches (two passes, `reduce=` for DDP);
  `gnc_metrics` generalized NC on the sphere (Liu et al. 2023); `class_means`.
- `NCAccumulator(K)`: update(features, labels) per batch, compute(W, b) → the dict of `nc_metrics`;
  `FeatureHook(model, "fc")` records the penultimate features; `NCTracker(model, "fc")` does both.

Everything else lives in the submodules (analysis.frames, analysis.theory, analysis.hierarchy, …).
"""

from analysis.metrics import class_means, gnc_metrics, nc_metrics, nc_metrics_streaming
from analysis.tracking import FeatureHook, NCAccumulator, NCTracker, distributed_sum

__all__ = [
    "FeatureHook",
    "NCAccumulator",
    "NCTracker",
    "class_means",
    "distributed_sum",
    "gnc_metrics",
    "nc_metrics",
    "nc_metrics_streaming",
]
