"""Hyperspherical uniformity of a set of directions (Liu et al., ICLR 2023; the Thomson and Tammes problems).

Rows x_1..x_K of X are normalized to the unit sphere S^{d−1} first. With r_ij = ‖x̂_i − x̂_j‖:
- Riesz s-energy  E_s = Σ_{i<j} r_ij^{−s}  (s > 0; s = 1 is the Thomson problem's Coulomb energy),
  log energy E_0 = Σ_{i<j} −log r_ij; minimal energy = maximal uniformity;
- minimum pairwise angle θ_min = min_{i<j} ∠(x̂_i, x̂_j) (the Tammes problem maximizes it);
- Gram-determinant uniformity log det(exp(−‖x̂_i − x̂_j‖²/(2σ²)))_ij (larger = more uniform; a Gaussian
  kernel keeps the determinant positive definite for distinct points).
Every function is differentiable (torch) and accepts numpy arrays.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from analysis._arrays import as_features


def _rows(X: Any) -> torch.Tensor:
    """A 2-D float tensor; torch tensors pass through undetached, so the measures stay differentiable."""
    if isinstance(X, torch.Tensor):
        if X.dim() != 2:
            raise ValueError(f"expected a 2-D (K, d) array, got shape {tuple(X.shape)}")
        return X if X.is_floating_point() else X.double()
    return as_features(X)

UNIFORMITY_KINDS = ("energy", "gram", "maxgap")


def normalize_rows(X: Any, eps: float = 1e-12) -> torch.Tensor:
    """x̂_i = x_i/‖x_i‖ (rows of norm below eps are left at their tiny size, not divided by 0)."""
    X = _rows(X)
    return X / X.norm(dim=1, keepdim=True).clamp_min(eps)


def pairwise_distances(U: torch.Tensor) -> torch.Tensor:
    """r_ij for i < j of unit rows, from 2 − 2cos, as a vector. Clamped at 1e-30 before the square root:
    coincident points then give r ≈ 1e-15 and a zero (not NaN) gradient through the clamp."""
    iu = torch.triu_indices(len(U), len(U), offset=1, device=U.device)
    # from the Gram matrix (K² numbers), not from gathered row pairs (K²·d/2: 2 GB at K = 1000, d = 512)
    cos = (U @ U.T)[iu[0], iu[1]]
    return (2 - 2 * cos).clamp_min(1e-30).sqrt()


def riesz_energy(X: Any, s: float = 1.0) -> torch.Tensor:
    """E_s = Σ_{i<j} ‖x̂_i − x̂_j‖^{−s} (s > 0), or the log energy Σ −log ‖x̂_i − x̂_j‖ for s = 0."""
    r = pairwise_distances(normalize_rows(X))
    return -torch.log(r).sum() if s == 0 else r.pow(-s).sum()


def log_riesz_energy(X: Any, s: float) -> torch.Tensor:
    """log E_s computed as a log-sum-exp (finite for large s, where E_s itself overflows)."""
    r = pairwise_distances(normalize_rows(X))
    return torch.logsumexp(-s * torch.log(r), dim=0)


def min_angle(X: Any) -> torch.Tensor:
    """θ_min in radians: the smallest angle between two of the directions."""
    r = pairwise_distances(normalize_rows(X))
    return 2 * torch.asin((r.min() / 2).clamp(max=1.0))


def gram_log_det(X: Any, sigma: float = 1.0) -> torch.Tensor:
    """log det K with K_ij = exp(−‖x̂_i − x̂_j‖²/(2σ²)): larger when the directions are more uniform."""
    U = normalize_rows(X)
    sq = (2 - 2 * U @ U.T).clamp_min(0)
    return torch.logdet(torch.exp(-sq / (2 * sigma**2)))


def etf_riesz_energy(K: int, s: float = 1.0) -> float:
    """E_s of the simplex ETF: every pairwise distance is √(2K/(K−1))."""
    r = math.sqrt(2 * K / (K - 1))
    pairs = K * (K - 1) / 2
    return pairs * (-math.log(r) if s == 0 else r ** (-s))


def align_configuration(points: Any, reference: Any, restarts: int = 64, iterations: int = 30,
                        seed: int = 0) -> tuple[torch.Tensor, float]:
    """The rotation (or reflection) and relabelling of `reference` (K×d) closest to `points` (K×d), both
    normalized to the sphere: iterated closest point — match the points (linear assignment), then the
    orthogonal Procrustes solution — from `restarts` random orthogonal starts. Returns (the reference
    moved onto `points`, row for row, and the RMS distance between them). For comparing a learned
    configuration with a code, which is defined only up to an orthogonal map and a permutation."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    P = normalize_rows(points).double().cpu().numpy()
    R = normalize_rows(reference).double().cpu().numpy()
    rng = np.random.default_rng(seed)
    best, best_rms = R, math.inf
    d = P.shape[1]
    for _ in range(restarts):
        Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
        for _ in range(iterations):
            moved = R @ Q
            rows, cols = linear_sum_assignment(((P[:, None, :] - moved[None, :, :]) ** 2).sum(2))
            U, _, Vt = np.linalg.svd(R[cols].T @ P)  # Procrustes: min ‖R_perm Q − P‖ over orthogonal Q
            Q = U @ Vt
        rows, cols = linear_sum_assignment(((P[:, None, :] - (R @ Q)[None, :, :]) ** 2).sum(2))
        aligned = (R @ Q)[cols]
        rms = float(np.sqrt(((aligned - P) ** 2).sum(1).mean()))
        if rms < best_rms:
            best, best_rms = aligned, rms
    return torch.as_tensor(best), best_rms
