"""Hierarchy-aware metrics (DESIGN §5.4; Bertinetto et al. 2020, Liang & Davis 2023).

With d_ij the LCA heights of the class tree (`analysis.hierarchy`) and S a target Gram (the HAFrame):
- top-1 accuracy;
- mistake severity = mean d(y_i, ŷ_i) over the misclassified samples (NaN when there are none);
- HierDist@k = mean over samples of (1/k) Σ_{j ∈ top-k classes of sample i} d(y_i, j) (the true class,
  when among the top k, counts 0);
- angular collapse of vectors x_1..x_K (class means or classifier rows) to S: the mean and the
  (population) std of |cos∠(x_i, x_j) − S_ij| over the pairs i < j;
- hierarchy-aware NC2 = ‖ PGP/‖PGP‖_F − PSP/‖PSP‖_F ‖_F with G the Gram of the class means,
  P = I − 11ᵀ/K (both centered at the mean of the class means); it is NC2 with S in place of the
  simplex ETF's Gram and 0 when the centered means have S's centered shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from analysis._arrays import as_features, as_labels, as_tensor
from analysis.metrics import add_fields, class_means, gram_distance

DEFAULT_KS = (1, 5, 20)


def mistake_severity(logits: Any, y: Any, lca: Any) -> float:
    """Mean LCA height between the truth and the top-1 prediction over the mistakes (NaN: no mistakes)."""
    return prediction_metrics(prediction_sums(logits, y, lca, ks=(1,)), ks=(1,))["mistake_severity"]


def hier_dist_at_k(logits: Any, y: Any, lca: Any, ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """{k: mean over samples of the mean LCA height from the truth to the k most likely classes}
    (k above K is clipped to K)."""
    m = prediction_metrics(prediction_sums(logits, y, lca, ks), ks)
    return {k: m[f"hier_dist@{k}"] for k in ks}


def _cosines(X: torch.Tensor) -> torch.Tensor:
    unit = X / X.norm(dim=1, keepdim=True)
    return unit @ unit.T


def angular_collapse(X: Any, S: Any) -> tuple[float, float]:
    """(mean, std) over i < j of |cos∠(x_i, x_j) − S_ij|, x_k the rows of X (K×d). NaN if a row is 0."""
    X = as_features(X).double()
    S = as_tensor(S, device=X.device).double()
    iu = torch.triu_indices(len(X), len(X), offset=1, device=X.device)
    err = (_cosines(X) - S)[iu[0], iu[1]].abs()
    return float(err.mean()), float(err.std(unbiased=False))


def centered_gram_distance(G: Any, S: Any) -> float:
    """‖PGP/‖PGP‖_F − PSP/‖PSP‖_F‖_F with P = I − 11ᵀ/K (the hierarchy-aware NC2 for G = class-mean Gram)."""
    G = as_tensor(G).double()
    S = as_tensor(S, device=G.device).double()
    P = torch.eye(len(G), dtype=torch.float64, device=G.device) - 1.0 / len(G)
    return gram_distance(P @ G @ P, P @ S @ P)


@dataclass
class PredictionSums:
    """Additive statistics of predictions over batches (or the shards of a data-parallel run): samples,
    correct top-1, the LCA heights summed over the mistakes, and per k the summed mean LCA height of
    the top-k classes."""

    samples: torch.Tensor  # () int64
    correct: torch.Tensor  # () int64
    severity: torch.Tensor  # () float64: Σ_{mistakes} d(y_i, ŷ_i)
    hier_dist: torch.Tensor  # (len(ks),) float64: Σ_i (1/k) Σ_{top k} d(y_i, j)

    __add__ = add_fields


def prediction_sums(logits: Any, y: Any, lca: Any, ks: Sequence[int] = DEFAULT_KS) -> PredictionSums:
    """The `PredictionSums` of one batch of logits (N, K) with labels y."""
    Z = as_features(logits)
    y = as_labels(y, device=Z.device)
    D = as_tensor(lca, device=Z.device).double()
    K = Z.shape[1]
    top = Z.topk(min(max(ks), K), dim=1).indices
    dist = D[y[:, None], top]  # (N, k_max)
    predicted = Z.argmax(1)  # the top-1 decision (argmax breaks ties like the accuracy of analysis.metrics)
    return PredictionSums(
        samples=torch.tensor(len(y), dtype=torch.int64, device=Z.device), correct=(predicted == y).sum(),
        severity=D[y, predicted].sum(),  # correct predictions add d(y, y) = 0
        hier_dist=torch.stack([dist[:, : min(k, K)].mean(1).sum() for k in ks]),
    )


def prediction_metrics(sums: PredictionSums, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """accuracy, mistake_severity (NaN without mistakes) and hier_dist@k from summed statistics."""
    n, correct = int(sums.samples), int(sums.correct)
    out = {"accuracy": correct / n if n else math.nan,
           "mistake_severity": float(sums.severity) / (n - correct) if n > correct else math.nan}
    out.update({f"hier_dist@{k}": float(v) / n if n else math.nan for k, v in zip(ks, sums.hier_dist, strict=True)})
    return out


def mean_geometry_metrics(means: Any, S: Any, W: Any = None) -> dict[str, float]:
    """Angular collapse of the class means (K×d) to S, of W's rows when given, and the hierarchy-aware
    NC2 of the means: keys angular_mean, angular_std, angular_mean_W, angular_std_W, hier_nc2."""
    means = as_features(means).double()
    out: dict[str, float] = {}
    out["angular_mean"], out["angular_std"] = angular_collapse(means, S)
    if W is not None:
        out["angular_mean_W"], out["angular_std_W"] = angular_collapse(W, S)
    out["hier_nc2"] = centered_gram_distance(means @ means.T, S)
    return out


def hierarchical_metrics(H: Any, y: Any, lca: Any, W: Any = None, b: Any = None, S: Any = None, K: int | None = None,
                         ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """All of the above for features H (N×d), labels y, LCA heights (K×K), classifier W and bias b
    (the logits Wh + b give accuracy, severity and HierDist@k) and a target Gram S (angular collapse of
    the class means, and of W's rows, and the hierarchy-aware NC2). Keys: accuracy, mistake_severity,
    hier_dist@k, angular_mean, angular_std, angular_mean_W, angular_std_W, hier_nc2."""
    H = as_features(H).double()
    y = as_labels(y, device=H.device)
    K = K if K is not None else len(as_tensor(lca))
    out: dict[str, float] = {}
    Wt = None
    if W is not None:
        Wt = as_features(W, device=H.device).double()
        Z = H @ Wt.T + (0 if b is None else as_tensor(b, device=H.device).double())
        out.update(prediction_metrics(prediction_sums(Z, y, lca, ks), ks))
    if S is not None:
        out.update(mean_geometry_metrics(class_means(H, y, K), S, Wt))
    return out
