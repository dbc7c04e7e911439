"""How many dimensions a representation uses: the effective rank and RankMe, from features or from their second moment.

With σ_1 ≥ σ_2 ≥ … ≥ 0 the singular values of a feature matrix X (N×d, one row per sample):

    erank(X)  = exp(−Σ_i p_i log p_i),   p_i = σ_i / Σ_j σ_j   (0 log 0 = 0)
    RankMe(X) = exp(−Σ_k p_k log p_k),   p_k = σ_k / ‖σ‖₁ + ε,  ε = 1e-7

- erank: Roy & Vetterli 2007, "The effective rank: a measure of effective dimensionality" (EUSIPCO). It lies in
  [1, rank X], equals r for r equal nonzero singular values, and does not depend on the scale of X.
- RankMe: Garrido, Balestriero, Najman & LeCun 2023, "RankMe: assessing the downstream performance of pretrained
  self-supervised representations by their rank" (ICML). The ε is added to every one of the min(N, d) singular
  values, zeros included, as the paper's formula does: each zero adds −ε log ε ≈ 1.6e-6 to the entropy.

Both are NaN for a zero or non-finite matrix. `X` may also be the singular values themselves (a 1-D input).

**From sufficient statistics.** The singular values of X are the square roots of the eigenvalues of its d×d second
moment G = XᵀX = Σ_i h_i h_iᵀ (`analysis.metrics.SufficientStats.second_moment()`, summed over batches in one pass),
so `effective_rank_gram(G)` and `rankme_gram(G, n)` need no features. An eigenvalue of G carries an absolute
rounding error of about d·ε_G·λ_max (ε_G the machine epsilon of G's dtype), so eigenvalues below `rtol`·λ_max
(default d·ε_G) are taken as 0 and σ_i = √λ_i above: a matrix of rank r gets r nonzero singular values, as from its
SVD. Singular values below √rtol·σ_max (7e-7·σ_max for d = 2048 in float64) are lost this way — what an SVD of X
would keep. `n`: the number of rows of X, so that RankMe counts min(n, d) singular values, as on X itself.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from analysis._arrays import as_tensor

RANKME_EPS = 1e-7


def _singular_values(X: Any) -> torch.Tensor | None:
    """The float64 singular values of a 2-D X, or X itself when 1-D (checked non-negative); None if non-finite."""
    t = as_tensor(X, name="X")
    if t.dim() not in (1, 2):
        raise ValueError(f"X must be a matrix (N, d) or a 1-D vector of singular values, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.double()
    if not bool(torch.isfinite(t).all()):
        return None
    if t.dim() == 1:
        if bool((t < 0).any()):
            raise ValueError("X as singular values (1-D) must be non-negative")
        return t.double()
    return torch.linalg.svdvals(t.double())


def _gram_singular_values(G: Any, n: int | None, rtol: float | None) -> torch.Tensor | None:
    """σ_i = √λ_i(G) for a symmetric positive semidefinite d×d G, eigenvalues below rtol·λ_max set to 0; the
    min(n, d) largest when n is given. None if G is not finite."""
    t = as_tensor(G, name="G")
    if t.dim() != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"G must be a square (d, d) second moment XᵀX, got shape {tuple(t.shape)}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer (the number of rows of X), got {n!r}")
    if rtol is not None and not (rtol >= 0):
        raise ValueError(f"rtol must be non-negative, got {rtol!r}")
    if not t.is_floating_point():
        t = t.double()
    if not bool(torch.isfinite(t).all()):
        return None
    d = t.shape[0]
    cut = (d * torch.finfo(t.dtype).eps) if rtol is None else rtol
    t = t.double()
    lam = torch.linalg.eigvalsh((t + t.T) / 2).flip(0)  # descending
    if d and float(lam[0]) > 0:
        lam = torch.where(lam > cut * lam[0], lam, torch.zeros_like(lam))
    else:
        lam = lam.clamp_min(0)
    sigma = lam.sqrt()
    return sigma if n is None else sigma[:min(n, d)]


def _entropy_rank(sigma: torch.Tensor | None, eps: float) -> float:
    """exp of the Shannon entropy (nats) of p = σ/‖σ‖₁ + eps (0 log 0 = 0); NaN where σ is 0 or was non-finite."""
    if sigma is None or sigma.numel() == 0:
        return math.nan
    total = sigma.sum()
    if not bool(total > 0):
        return math.nan
    p = sigma / total + eps
    return math.exp(-float(torch.xlogy(p, p).sum()))


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps >= 0) or math.isinf(eps):
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    return float(eps)


def effective_rank(X: Any) -> float:
    """Roy & Vetterli's effective rank exp(−Σ p_i log p_i), p_i = σ_i/Σ_j σ_j, of a matrix X (N, d) — or of the
    singular values X (1-D). Scale-free, in [1, rank X] (module docstring).
    >>> effective_rank([[3.0, 0.0], [0.0, 3.0], [0.0, 0.0]]), effective_rank([2.0, 2.0, 0.0])
    (2.0, 2.0)
    >>> round(effective_rank([3.0, 1.0]), 6)   # p = (3/4, 1/4): exp(0.562335)
    1.754765
    """
    return _entropy_rank(_singular_values(X), 0.0)


def rankme(X: Any, eps: float = RANKME_EPS) -> float:
    """Garrido et al.'s RankMe exp(−Σ p_k log p_k), p_k = σ_k/‖σ‖₁ + eps (eps = 1e-7), over the min(N, d) singular
    values of X (N, d) — or over the singular values X (1-D), zeros included.
    >>> round(rankme([[1.0, 0.0], [0.0, 1.0]]), 6), round(rankme([1.0, 0.0]), 6)
    (2.0, 1.000002)
    """
    return _entropy_rank(_singular_values(X), _check_eps(eps))


def effective_rank_gram(G: Any, *, rtol: float | None = None) -> float:
    """`effective_rank(X)` from the second moment G = XᵀX (d, d) alone: σ_i = √λ_i(G), eigenvalues below
    `rtol`·λ_max (default d·ε of G's dtype) taken as 0 (module docstring).
    >>> import torch
    >>> X = torch.randn(50, 6, dtype=torch.float64) @ torch.randn(6, 8, dtype=torch.float64)   # rank 6
    >>> abs(effective_rank_gram(X.T @ X) - effective_rank(X)) < 1e-10
    True
    """
    return _entropy_rank(_gram_singular_values(G, None, rtol), 0.0)


def rankme_gram(G: Any, n: int | None = None, eps: float = RANKME_EPS, *, rtol: float | None = None) -> float:
    """`rankme(X)` from the second moment G = XᵀX (d, d) alone; `n` the number of rows of X, so that min(n, d)
    singular values count as on X (default: all d). Eigenvalues below `rtol`·λ_max are taken as 0 (module docstring).
    >>> import torch
    >>> X = torch.randn(5, 8, dtype=torch.float64)
    >>> abs(rankme_gram(X.T @ X, n=5) - rankme(X)) < 1e-10
    True
    """
    return _entropy_rank(_gram_singular_values(G, n, rtol), _check_eps(eps))
