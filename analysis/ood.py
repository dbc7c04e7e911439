"""NC5: out-of-distribution features become orthogonal to the in-distribution class means.

Ammar et al. 2024 ("NECO: NEural Collapse Based Out-of-distribution detection", ICLR 2024, eq. 5) measure the
orthogonality of the OOD data to the ID classes by the deviation

    NC5 = OrthoDev = (1/K) Σ_k |⟨μ_k, μ_G^OOD⟩| / (‖μ_k‖ ‖μ_G^OOD‖)

with μ_k the ID class means (not centered) and μ_G^OOD the mean of the OOD features; 0 when every class mean is
orthogonal to the OOD mean, which NECO observe to emerge with training alongside NC1–NC4 (rhubarbwu/neural-collapse's
`orthogonality_deviation`, its "nc5_ood_dev", computes the same number from the same two inputs).

The OOD features may arrive in batches: only their sum and count are kept (float64), so any number of batches of
any size gives the mean of them all; `reduce` sums them over the shards of a data-parallel run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from analysis._arrays import as_features, as_tensor
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
