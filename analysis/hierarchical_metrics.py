"""Hierarchy-aware metrics (DESIGN §5.4; Bertinetto et al. 2020, Liang & Davis 2023).

With d_ij the LCA distances of the class tree (`analysis.hierarchy`, `Tree.lca_heights` under the tree's
convention), d_max = max d_ij and S a target Gram (the HAFrame):
- ranking: every measure below reads one ranking of the classes per sample, `ranking(logits, k)`: by logit,
  descending, ties to the smaller class index (a stable sort). Its first column is the top-1 decision, the
  first maximal index as torch.argmax documents it, so accuracy, severity and HierDist@k agree on tied
  logits (HierDist@1 = (1 − accuracy)·severity), and the top k of a sample do not depend on which other
  k are requested;
- top-1 accuracy;
- mistake severity = mean d(y_i, ŷ_i) over the misclassified samples (NaN when there are none);
- HierDist@k = mean over samples of (1/k) Σ_{j ∈ top-k classes of sample i} d(y_i, j) (the true class,
  when among the top k, counts 0);
- best HierDist@k = mean over samples of min_{j ∈ top k} d(y_i, j), the distance of the best of the k
  guesses ("hdist_top" of Bertinetto et al.'s code, better_mistakes/model/run_xent.py, kept by Karthik et al.
  2021 and the HAFrame code); 0 for a sample whose truth is among its top k;
- hierarchical precision@k = Σ_i Σ_{j ∈ top k of i} s(y_i, j) / Σ_i Σ_{r ≤ k} s*_r(y_i), with the
  similarity s = 1 − d/d_max and s*_r(y) the r-th largest similarity of any class to y (the best k
  guesses possible): 1 exactly when each sample's top k are k of the classes nearest its truth. The
  authors' code (same file) divides a batch's numerator by the denominator summed over all K classes'
  rows instead of the samples' true classes and averages the ratios over batches: for class-balanced data
  and batches of B samples its value is ours times B/K; ours does not depend on the batching;
- k above K is clipped to K in all the @k measures;
- angular collapse of vectors x_1..x_K (class means or classifier rows) to S: the mean and the
  (population) std of |cos∠(x_i, x_j) − S_ij| over the pairs i < j, and the (population) std of the
  signed cos∠(x_i, x_j) − S_ij (the std the HAFrame code, HAFrame/neural_collapse.py, and Papyan et al.'s
  equiangularity report);
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
from analysis.blocked import logit_blocks
from analysis.metrics import add_fields, class_means, gram_distance

DEFAULT_KS = (1, 5, 20)


def mistake_severity(logits: Any, y: Any, lca: Any) -> float:
    """Mean LCA distance between the truth and the top-1 prediction over the mistakes (NaN: no mistakes)."""
    return prediction_metrics(prediction_sums(logits, y, lca, ks=(1,)), ks=(1,))["mistake_severity"]


def hier_dist_at_k(logits: Any, y: Any, lca: Any, ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """{k: mean over samples of the mean LCA distance from the truth to the k most likely classes}
    (k above K is clipped to K)."""
    m = prediction_metrics(prediction_sums(logits, y, lca, ks), ks)
    return {k: m[f"hier_dist@{k}"] for k in ks}


def best_hier_dist_at_k(logits: Any, y: Any, lca: Any, ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """{k: mean over samples of the smallest LCA distance from the truth to one of the k most likely classes}
    (Bertinetto et al.'s "hdist_top"; k above K is clipped to K)."""
    m = prediction_metrics(prediction_sums(logits, y, lca, ks), ks)
    return {k: m[f"best_hier_dist@{k}"] for k in ks}


def hier_precision_at_k(logits: Any, y: Any, lca: Any, ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """{k: hierarchical precision@k}, Σ of the similarities 1 − d/d_max of the top k over Σ of the best k
    possible (module docstring; k above K is clipped to K)."""
    m = prediction_metrics(prediction_sums(logits, y, lca, ks), ks)
    return {k: m[f"hier_precision@{k}"] for k in ks}


def _cosines(X: torch.Tensor) -> torch.Tensor:
    unit = X / X.norm(dim=1, keepdim=True)
    return unit @ unit.T


def _cosine_errors(X: Any, S: Any) -> torch.Tensor:
    """cos∠(x_i, x_j) − S_ij over the pairs i < j, float64."""
    X = as_features(X).double()
    S = as_tensor(S, device=X.device).double()
    iu = torch.triu_indices(len(X), len(X), offset=1, device=X.device)
    return (_cosines(X) - S)[iu[0], iu[1]]


def angular_collapse(X: Any, S: Any) -> tuple[float, float]:
    """(mean, std) over i < j of |cos∠(x_i, x_j) − S_ij|, x_k the rows of X (K×d). NaN if a row is 0."""
    err = _cosine_errors(X, S).abs()
    return float(err.mean()), float(err.std(unbiased=False))


def angular_std_signed(X: Any, S: Any) -> float:
    """The population std over i < j of the signed cos∠(x_i, x_j) − S_ij (HAFrame's code; with S the
    simplex ETF's −1/(K − 1), Papyan et al.'s equiangularity). NaN if a row is 0."""
    return float(_cosine_errors(X, S).std(unbiased=False))


def centered_gram_distance(G: Any, S: Any) -> float:
    """‖PGP/‖PGP‖_F − PSP/‖PSP‖_F‖_F with P = I − 11ᵀ/K (the hierarchy-aware NC2 for G = class-mean Gram)."""
    G = as_tensor(G).double()
    S = as_tensor(S, device=G.device).double()
    P = torch.eye(len(G), dtype=torch.float64, device=G.device) - 1.0 / len(G)
    return gram_distance(P @ G @ P, P @ S @ P)


def ranking(logits: Any, k: int) -> torch.Tensor:
    """(N, min(k, K)) int64: the k most likely classes of each row of the logits, most likely first; ties go
    to the smaller class index (the order of a stable sort by logit, descending). Column 0 is the first
    maximal index, torch.argmax's documented choice. The top k is a prefix of the top k' > k."""
    Z = as_features(logits)
    K = Z.shape[1]
    k = min(int(k), K)
    if k >= K:
        return torch.sort(Z, dim=1, descending=True, stable=True).indices
    # fast path: topk gives the right set wherever exactly k logits reach the k-th largest value; order that
    # set by (logit descending, index ascending). Rows with ties across the k-th place: a full stable sort.
    top = Z.topk(k, dim=1).indices.sort(dim=1).values
    vals = Z.gather(1, top)
    top = top.gather(1, torch.sort(vals, dim=1, descending=True, stable=True).indices)
    tied = (Z >= vals.min(1, keepdim=True).values).sum(1) != k
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        top[rows] = torch.sort(Z[rows], dim=1, descending=True, stable=True).indices[:, :k]
    return top


@dataclass
class PredictionSums:
    """Additive statistics of predictions over batches (or the shards of a data-parallel run): samples,
    correct top-1, the LCA distances summed over the mistakes, and per k the summed mean LCA distance of the
    top-k classes, the summed best (smallest) one, and the numerator and denominator of the hierarchical
    precision."""

    samples: torch.Tensor  # () int64
    correct: torch.Tensor  # () int64
    severity: torch.Tensor  # () float64: Σ_{mistakes} d(y_i, ŷ_i)
    hier_dist: torch.Tensor  # (len(ks),) float64: Σ_i (1/k) Σ_{top k} d(y_i, j)
    best_hier_dist: torch.Tensor  # (len(ks),) float64: Σ_i min_{top k} d(y_i, j)
    precision_num: torch.Tensor  # (len(ks),) float64: Σ_i Σ_{top k} (1 − d(y_i, j)/d_max)
    precision_den: torch.Tensor  # (len(ks),) float64: Σ_i Σ_{r <= k} s*_r(y_i), the best possible numerator

    __add__ = add_fields


def prediction_sums(logits: Any, y: Any, lca: Any, ks: Sequence[int] = DEFAULT_KS) -> PredictionSums:
    """The `PredictionSums` of one batch of logits (N, K) with labels y and the K×K LCA distances."""
    Z = as_features(logits)
    y = as_labels(y, device=Z.device)
    D = as_tensor(lca, device=Z.device).double()
    K = Z.shape[1]
    kk = [min(k, K) for k in ks]
    top = ranking(Z, max(kk))
    dist = D[y[:, None], top]  # (N, k_max)
    predicted = top[:, 0]
    d_max = float(D.max()) if D.numel() else 0.0
    d_max = d_max if d_max > 0 else math.inf  # all distances 0: every guess is perfect (similarity 1)
    # Σ_{j <= k} (1 − d_j/d_max) = k − (Σ_{j <= k} d_j)/d_max: with integer distances the sums are exact, so the
    # precision at k = K is exactly 1. The best possible distances to a truth: its row of D in ascending order.
    classes, inverse = torch.unique(y, return_inverse=True)
    best = D[classes].topk(max(kk), dim=1, largest=False).values.cumsum(1)[inverse]  # (N, k_max)
    reached = dist.cumsum(1)
    return PredictionSums(
        samples=torch.tensor(len(y), dtype=torch.int64, device=Z.device), correct=(predicted == y).sum(),
        severity=D[y, predicted].sum(),  # correct predictions add d(y, y) = 0
        hier_dist=torch.stack([dist[:, :k].mean(1).sum() for k in kk]),
        best_hier_dist=torch.stack([dist[:, :k].min(1).values.sum() for k in kk]),
        precision_num=torch.stack([k * len(y) - reached[:, k - 1].sum() / d_max for k in kk]),
        precision_den=torch.stack([k * len(y) - best[:, k - 1].sum() / d_max for k in kk]),
    )


def prediction_metrics(sums: PredictionSums, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """accuracy, mistake_severity (NaN without mistakes), and per k hier_dist@k, best_hier_dist@k and
    hier_precision@k from summed statistics."""
    n, correct = int(sums.samples), int(sums.correct)
    out = {"accuracy": correct / n if n else math.nan,
           "mistake_severity": float(sums.severity) / (n - correct) if n > correct else math.nan}
    for i, k in enumerate(ks):
        out[f"hier_dist@{k}"] = float(sums.hier_dist[i]) / n if n else math.nan
        out[f"best_hier_dist@{k}"] = float(sums.best_hier_dist[i]) / n if n else math.nan
        den = float(sums.precision_den[i])
        out[f"hier_precision@{k}"] = float(sums.precision_num[i]) / den if den > 0 else math.nan
    return out


def mean_geometry_metrics(means: Any, S: Any, W: Any = None) -> dict[str, float]:
    """Angular collapse of the class means (K×d) to S, of W's rows when given, and the hierarchy-aware
    NC2 of the means: keys angular_mean, angular_std (of |cos − S|), angular_std_signed (of cos − S), the
    same three of W with the suffix _W, and hier_nc2."""
    means = as_features(means).double()
    out: dict[str, float] = {}
    out["angular_mean"], out["angular_std"] = angular_collapse(means, S)
    out["angular_std_signed"] = angular_std_signed(means, S)
    if W is not None:
        out["angular_mean_W"], out["angular_std_W"] = angular_collapse(W, S)
        out["angular_std_signed_W"] = angular_std_signed(W, S)
    out["hier_nc2"] = centered_gram_distance(means @ means.T, S)
    return out


def hierarchical_metrics(H: Any, y: Any, lca: Any, W: Any = None, b: Any = None, S: Any = None, K: int | None = None,
                         ks: Sequence[int] = DEFAULT_KS, logits: Any = None,
                         sums: PredictionSums | None = None) -> dict[str, float]:
    """All of the above for features H (N×d), labels y, LCA heights (K×K), classifier W and bias b
    (the logits Wh + b give accuracy, severity and the @k measures, all from one `ranking`) and a target
    Gram S (angular collapse of the class means, and of W's rows, and the hierarchy-aware NC2). Keys:
    accuracy, mistake_severity, hier_dist@k, best_hier_dist@k, hier_precision@k, angular_mean, angular_std,
    angular_std_signed, angular_mean_W, angular_std_W, angular_std_signed_W, hier_nc2. `logits`: HWᵀ + b where the
    caller has them already (an N × d × K product saved), or `sums`: their `prediction_sums` (e.g. summed block by
    block); without either the logits are formed one block of rows at a time (analysis.blocked), never N × K at once.
    >>> import torch
    >>> lca = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 2, 0]])
    >>> H = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]); W = H.clone()
    >>> out = hierarchical_metrics(H, [0, 1, 1], lca, W)
    >>> out["accuracy"], out["mistake_severity"]                # the third sample is mistaken for class 2
    (0.6666666666666666, 2.0)
    """
    H = as_features(H).double()
    y = as_labels(y, device=H.device)
    K = K if K is not None else len(as_tensor(lca))
    out: dict[str, float] = {}
    Wt = None
    if W is not None:
        Wt = as_features(W, device=H.device).double()
        if sums is None and logits is not None:
            Z = as_features(logits, device=H.device).double()
            if Z.shape != (H.shape[0], Wt.shape[0]):
                raise ValueError(f"logits must have shape (N, K) = {(H.shape[0], Wt.shape[0])}, got {tuple(Z.shape)}")
            sums = prediction_sums(Z, y, lca, ks)
        elif sums is None:
            bias = None if b is None else as_tensor(b, device=H.device).double()
            D = as_tensor(lca, device=H.device).double()  # once, not per block
            parts = [prediction_sums(Z, y[rows], D, ks) for rows, Z in logit_blocks(H, Wt, bias, copies=4)]
            sums = parts[0]
            for part in parts[1:]:
                sums = sums + part
        out.update(prediction_metrics(sums, ks))
    if S is not None:
        out.update(mean_geometry_metrics(class_means(H, y, K), S, Wt))
    return out
