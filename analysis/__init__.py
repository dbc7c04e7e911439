"""Measuring and predicting neural collapse: pure math (torch, numpy; scipy, sympy and cvxpy only in the
modules that need them, imported on use). No training code.

The names below are the entry points for a researcher's own network:

- `nc_metrics(H, y, W, b)`: NC1–NC4 and companions of a feature matrix (Papyan, Han & Donoho 2020);
  `nc_metrics_streaming(batches, K, W, b)` the same from batches (two passes, `reduce=` for DDP);
  `gnc_metrics` generalized NC on the sphere (Liu et al. 2023); `class_means`.
- `NCAccumulator(K)`: update(features, labels) per batch, compute(W, b) → the dict of `nc_metrics`;
  `FeatureHook(model, "fc")` records the penultimate features; `NCTracker(model, "fc")` does both, and with
  `layers=[...]` or `layers="all"` every layer in the same pass (`compute_layers`).
- `measure_layers(model, batches, K, layers)`: every layer exactly over data iterated twice; `separation_law(D)`
  fits log D_l = a − ρ·l (He & Su 2023).
- `effective_rank(X)` (Roy & Vetterli 2007) and `rankme(X)` (Garrido et al. 2023) of features or singular values;
  `effective_rank_gram(G)`, `rankme_gram(G, n)` from a second moment XᵀX (`SufficientStats.second_moment()`).
- `nc5(means, ood)`: NC5, the orthogonality of out-of-distribution features to the class means (Ammar et al. 2024).

Everything else lives in the submodules (analysis.frames, analysis.theory, analysis.hierarchy, …).
"""

from analysis.layers import LayerHooks, SeparationLaw, measure_layers, separation_law
from analysis.metrics import class_means, gnc_metrics, nc_metrics, nc_metrics_streaming
from analysis.ood import nc5
from analysis.rank import effective_rank, effective_rank_gram, rankme, rankme_gram
from analysis.tracking import FeatureHook, NCAccumulator, NCTracker, distributed_sum

__all__ = [
    "FeatureHook",
    "LayerHooks",
    "SeparationLaw",
    "measure_layers",
    "separation_law",
    "NCAccumulator",
    "NCTracker",
    "class_means",
    "distributed_sum",
    "effective_rank",
    "effective_rank_gram",
    "gnc_metrics",
    "nc_metrics",
    "nc_metrics_streaming",
    "nc5",
    "rankme",
    "rankme_gram",
]
