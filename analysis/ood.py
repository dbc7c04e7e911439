"""NC5: out-of-distribution features become orthogonal to the in-distribution class means.

Ammar et al. 2024 ("NECO: NEural Collapse Based Out-of-distribution detection", ICLR 2024, eq. 5) measure the
orthogonality of the OOD data to the ID classes by the deviation

    NC5 = OrthoDev = (1/K) Σ_k |⟨μ_k, μ_G^OOD⟩| / (‖μ_k‖ ‖μ_G^OOD‖)

with μ_k the ID class means (not centered) and μ_G^OOD the mean of the OOD features; 0 when every class mean is
orthogonal to the OOD mean, which NECO observe to emerge with training alongside NC1–NC4 (rhubarbwu/neural-collapse's
`orthogonality_deviation`, its "nc5_ood_dev", computes the same number from the same two inputs).

The OOD features may arrive in batches: only their sum and count are kept (float64), so any number of batches of
any size gives the mean of them all; `reduce` sums them over the shards of a data-parallel run.

**OOD scores** (`analysis.measure`'s OOD keys, OOD_KEYS): the separation of in-distribution (ID) and OOD features,
as AUROC (`auroc`: the probability that an ID sample scores above an OOD one, ties counted half; 1 = fully separated,
0.5 = chance): `ood_auroc_nearest_mean` for the score −min_k ‖h − μ_k‖ (distance to the nearest ID class mean:
neural collapse brings ID features onto their means), `ood_auroc_max_logit` for max_k (Wh + b)_k (NaN without W),
and `ood_distance_ratio` = mean nearest-mean distance of the OOD features / that of the ID features
(`ood_metrics`). `OODScores` computes the scores a block of rows at a time and keeps them (N + M numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from analysis._arrays import as_features, as_tensor
from analysis.blocked import block_rows
from analysis.metrics import class_means


def _is_matrix_list(x: Any) -> bool:
    """A nested list of numbers (one matrix), as opposed to a list of batches."""
    return (isinstance(x, list) and bool(x) and isinstance(x[0], (list, tuple)) and bool(x[0])
            and isinstance(x[0][0], (int, float, np.number)))


def feature_mean(features: Any, *, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The mean (d,) float64 of OOD features given as one matrix (N, d) or an iterable of batches (each a matrix, or
    a tuple whose first item is the matrix, e.g. (features, labels) from a loader); summed in float64.
    >>> feature_mean([[1.0, 0.0], [3.0, 2.0]]).tolist(), feature_mean([[[1.0, 0.0]], ([[3.0, 2.0]], [7])]).tolist()
    ([2.0, 1.0], [2.0, 1.0])
    """
    if isinstance(features, torch.Tensor) or hasattr(features, "__array__") or _is_matrix_list(features):
        batches: Iterable[Any] = [features]
    elif isinstance(features, Iterable):
        batches = features
    else:
        raise TypeError(f"ood must be a matrix (N, d) or an iterable of batches, got {type(features).__name__}")
    total: torch.Tensor | None = None
    count = 0
    for batch in batches:
        H = batch[0] if isinstance(batch, tuple) else batch
        H = as_features(H)
        part = H.double().sum(0) if H.dtype != torch.float64 else H.sum(0)
        if total is not None and part.shape != total.shape:
            raise ValueError(f"ood batches must share the feature dimension d: {total.shape[0]} and {part.shape[0]}")
        total = part if total is None else total + part.to(total.device)
        count += H.shape[0]
    if total is None:
        raise ValueError("ood holds no batches")
    stats = torch.cat([total, torch.tensor([float(count)], dtype=torch.float64, device=total.device)])
    if reduce is not None:
        stats = reduce(stats)
    if not float(stats[-1]) > 0:
        raise ValueError("ood holds no samples: the OOD mean is undefined")
    return stats[:-1] / stats[-1]


def nc5(means: Any, ood: Any, y: Any = None, *, K: int | None = None,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """NC5 (Ammar et al. 2024, NECO, eq. 5): (1/K) Σ_k |cos∠(μ_k, μ_G^OOD)|, the mean absolute cosine between the
    ID class means μ_k (K, d) and the mean of the OOD features `ood` (a matrix (N_ood, d) or an iterable of batches,
    see `feature_mean`); 0 when the OOD mean is orthogonal to every class mean. With labels `y`, `means` are the ID
    features H (N, d) and μ_k their class means (K classes, default max(y) + 1). NaN if a class mean or the OOD
    mean is 0 (no direction) or anything is non-finite. `reduce`: a sum over the shards of a data-parallel run,
    applied to the OOD sum and count (the means are the caller's: compute them over all shards).
    >>> nc5([[1.0, 0.0], [0.0, 2.0]], [[0.0, 0.0, 1.0], [0.0, 0.0, 3.0]])   # d = 2 vs 3: an error
    Traceback (most recent call last):
    ...
    ValueError: means have d = 2 features but ood has 3
    >>> nc5([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], [[0.0, 0.0, 1.0], [0.0, 0.0, 3.0]])   # orthogonal
    0.0
    >>> round(nc5([[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0]]), 12)   # both at 45°: cos = 1/√2
    0.707106781187
    """
    if K is not None and y is None:
        raise ValueError("K is the number of classes of the labels y: pass y with it, or the class means alone")
    if y is not None:
        H = as_features(means)
        labels = as_tensor(y, name="y")
        mu = class_means(H, labels, int(labels.max()) + 1 if K is None else K).double()
    else:
        mu = as_tensor(means, name="means")
        if mu.dim() != 2:
            raise ValueError(f"means must be (K, d) class means, got shape {tuple(mu.shape)}")
        mu = mu.double()
    g = feature_mean(ood, reduce=reduce).to(mu.device)
    if g.shape[0] != mu.shape[1]:
        raise ValueError(f"means have d = {mu.shape[1]} features but ood has {g.shape[0]}")
    if not (bool(torch.isfinite(mu).all()) and bool(torch.isfinite(g).all())):
        return math.nan
    norms = torch.linalg.vector_norm(mu, dim=1)
    g_norm = torch.linalg.vector_norm(g)
    if bool((norms == 0).any()) or float(g_norm) == 0:
        return math.nan
    return float(((mu @ g).abs() / (norms * g_norm)).mean())


# ---------------------------------------------------------------------------------------------------- OOD scores

OOD_KEYS = ("nc5", "ood_auroc_nearest_mean", "ood_auroc_max_logit", "ood_distance_ratio")


def auroc(inside: torch.Tensor, outside: torch.Tensor) -> float:
    """P(score of an ID sample > score of an OOD one) + ½ P(equal): the Mann–Whitney U over n·m, from midranks.

    >>> auroc(torch.tensor([3.0, 2.0]), torch.tensor([1.0, 2.0]))   # 3 of the 4 pairs above, one tie
    0.875
    """
    s = torch.cat([inside, outside]).double().cpu().numpy()
    n, m = len(inside), len(outside)
    order = np.argsort(s, kind="stable")
    _, inverse, counts = np.unique(s[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid = (ends - counts + 1 + ends) / 2.0  # the mean 1-based rank of each group of ties
    ranks = np.empty(len(s))
    ranks[order] = mid[inverse]
    return float((ranks[:n].sum() - n * (n + 1) / 2.0) / (n * m))


class OODScores:
    """Nearest-mean distances and max logits of blocks of features, a budget's rows at a time (no N×K matrix):
    `add(H)` scores a block against the ID class `means` (K, d) and, with a classifier `W` (and bias `b`), its
    logits.

    >>> s = OODScores(torch.tensor([[0.0, 0.0], [4.0, 0.0]]), None, None)
    >>> s.add(torch.tensor([[3.0, 0.0], [0.0, 2.0]]))
    >>> torch.cat(s.distance).tolist(), s.count()
    ([1.0, 2.0], 2)
    """

    def __init__(self, means: torch.Tensor, W: torch.Tensor | None, b: torch.Tensor | None) -> None:
        self.means = means.double()
        self.mean_sq = self.means.square().sum(1)
        self.W = None if W is None else W.double()
        self.b = None if b is None else b.double()
        self.distance: list[torch.Tensor] = []
        self.max_logit: list[torch.Tensor] = []

    def add(self, H: torch.Tensor) -> None:
        K = max(self.means.shape[0], 0 if self.W is None else self.W.shape[0])
        rows = block_rows(K, itemsize=8, copies=3)
        for i in range(0, H.shape[0], rows):
            h = H[i:i + rows].double()
            sq = (h.square().sum(1, keepdim=True) - 2 * h @ self.means.T + self.mean_sq).clamp_min(0)
            self.distance.append(sq.amin(1).sqrt())
            if self.W is not None:
                z = h @ self.W.T
                self.max_logit.append((z if self.b is None else z + self.b).amax(1))

    def count(self) -> int:
        return sum(len(t) for t in self.distance)


def ood_metrics(inside: OODScores, outside: OODScores) -> dict[str, float]:
    """The separation of the ID scores `inside` from the OOD scores `outside`: `ood_auroc_nearest_mean` (the AUROC of
    −min_k ‖h − μ_k‖), `ood_auroc_max_logit` (of max_k (Wh + b)_k; NaN without W) and `ood_distance_ratio` (the mean
    nearest-mean distance of the OOD features over that of the ID features; NaN when the latter is 0).

    >>> means = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    >>> inside, outside = OODScores(means, None, None), OODScores(means, None, None)
    >>> inside.add(torch.tensor([[0.5, 0.0], [4.0, 1.0]]))
    >>> outside.add(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    >>> ood_metrics(inside, outside)
    {'ood_auroc_nearest_mean': 1.0, 'ood_auroc_max_logit': nan, 'ood_distance_ratio': 3.3333333333333335}
    """
    d_in, d_out = torch.cat(inside.distance), torch.cat(outside.distance)
    out = {"ood_auroc_nearest_mean": auroc(-d_in, -d_out), "ood_auroc_max_logit": math.nan,
           "ood_distance_ratio": math.nan}
    if inside.W is not None:
        out["ood_auroc_max_logit"] = auroc(torch.cat(inside.max_logit), torch.cat(outside.max_logit))
    mean_in = float(d_in.mean())
    if mean_in > 0:
        out["ood_distance_ratio"] = float(d_out.mean()) / mean_in
    return out
