"""Target frames: the hierarchy-aware frame (HAFrame; Liang & Davis, ICCV 2023), the simplex ETF and
spherical codes (the generalized-NC targets of HUG, Liu et al. 2023: in analysis.spherical_codes, importable from
here as before).

With d_ij the LCA heights of the class tree, d_max = max d_ij and a decay γ > 0,

    E_ij = exp(−γ·d_ij/d_max),   S = (1 − s_min)·E + s_min·11ᵀ   (diagonal 1),

and the frame is any W (K×d) with unit rows and WWᵀ = S. We take W = [S^{1/2}, 0]: the symmetric
square root Q Λ^{1/2} Qᵀ of S = QΛQᵀ (the paper's W = Q Λ^{1/2} Uᵀ with U = Q), padded with d − K zero
columns, so the frame is unique (no eigenvector signs to choose) and lives in the first K coordinates.
For d < K it needs d >= rank S and uses U = the top-rank eigenvectors: W = Q_r Λ_r^{1/2}.

PSD bound: for E positive definite, S = (1 − s)(E + s/(1 − s)·11ᵀ) is PSD iff s >= −1/(1ᵀE⁻¹1 − 1)
(matrix determinant lemma); at equality S is singular. That bound is the default s_min: the most
spread-out frame with the hierarchy's shape (for a flat tree S is then the simplex ETF's Gram). s_min is
the limit of S_ij as d_ij → ∞, not the smallest entry of S, and for small γ the bound lies below −1; S
stays a valid Gram of unit vectors (PSD with unit diagonal implies |S_ij| <= 1). The authors' code
searches s_min on a grid in [−1, −1/(K−1)] and so stops at −1 there; we do not clamp.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# eigenvalues of S above −PSD_TOL·K count as nonnegative (S at the PSD bound is singular up to round-off)
PSD_TOL = 1e-10


class FrameError(ValueError):
    """A frame that cannot be built; the message is one line."""


@dataclass(frozen=True)
class Frame:
    """S (K×K, unit diagonal), W (K×d, unit rows, WWᵀ = S), and the parameters that made them."""

    S: np.ndarray
    W: np.ndarray
    gamma: float
    s_min: float

    @property
    def rank(self) -> int:
        return int(np.linalg.matrix_rank(self.S, tol=1e-9))


def decay_matrix(lca: np.ndarray, gamma: float) -> np.ndarray:
    """E_ij = exp(−γ·d_ij/d_max)."""
    D = np.asarray(lca, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise FrameError(f"LCA heights must be a square matrix, got shape {D.shape}")
    if not (np.isfinite(gamma) and gamma > 0):
        raise FrameError(f"gamma must be > 0, got {gamma}")
    d_max = D.max()
    if d_max <= 0:
        raise FrameError("LCA heights are all zero: the tree has no structure")
    return np.exp(-gamma * D / d_max)


def psd_bound(lca: np.ndarray, gamma: float) -> float:
    """The smallest s_min for which S is positive semidefinite: −1/(1ᵀE⁻¹1 − 1)."""
    E = decay_matrix(lca, gamma)
    one = np.ones(len(E))
    # for small γ, E → 11ᵀ and the bound → −∞: refuse where E is too ill-conditioned to resolve it
    if np.linalg.cond(E) > 1e12:
        raise FrameError(f"gamma = {gamma:g} is too small: exp(−γ·D/d_max) is numerically singular, so the "
                         "PSD bound of s_min cannot be computed (use a larger gamma)")
    q = float(one @ np.linalg.solve(E, one))
    if not q > 1 + 1e-12:
        raise FrameError(f"the PSD bound is unbounded for gamma = {gamma:g} (1ᵀE⁻¹1 = {q:.6g} <= 1)")
    return -1.0 / (q - 1.0)


def haframe_gram(lca: np.ndarray, gamma: float, s_min: float | None = None) -> np.ndarray:
    """S = (1 − s_min)·exp(−γ·D/d_max) + s_min·11ᵀ; s_min None: the PSD bound. Refuses a non-PSD S."""
    E = decay_matrix(lca, gamma)
    if s_min is None:
        s_min = psd_bound(lca, gamma)
    if not (np.isfinite(s_min) and s_min < 1):
        raise FrameError(f"s_min must be a finite number < 1, got {s_min}")
    S = (1 - s_min) * E + s_min
    smallest = float(np.linalg.eigvalsh(S)[0])
    if smallest < -PSD_TOL * len(S):
        bound = psd_bound(lca, gamma)
        raise FrameError(f"the HAFrame Gram S is not positive semidefinite (smallest eigenvalue "
                         f"{smallest:.3e}) for s_min = {s_min:g}; it needs s_min >= {bound:.6g}")
    return S


def frame_from_gram(S: np.ndarray, d: int) -> np.ndarray:
    """W (K×d) with WWᵀ = S: the symmetric square root of S padded with zeros (d >= K), else the
    top-rank eigenvectors scaled (needs d >= rank S)."""
    S = np.asarray(S, dtype=np.float64)
    lam, Q = np.linalg.eigh(S)
    lam = np.clip(lam, 0.0, None)  # round-off below zero at the PSD bound
    K = len(S)
    if d >= K:
        W = np.zeros((K, d))
        W[:, :K] = (Q * np.sqrt(lam)) @ Q.T
        return W
    rank = int((lam > 1e-12 * lam.max()).sum())
    if d < rank:
        raise FrameError(f"the frame needs d >= rank S = {rank}, got d = {d}")
    W = np.zeros((K, d))
    W[:, :rank] = Q[:, -rank:] * np.sqrt(lam[-rank:])
    return W


def haframe(lca: np.ndarray, gamma: float, s_min: float | None = None, d: int | None = None) -> Frame:
    """The HAFrame of a class tree's LCA heights: S and W with WWᵀ = S (d defaults to K)."""
    K = len(np.asarray(lca))
    if s_min is None:
        s_min = psd_bound(lca, gamma)
    S = haframe_gram(lca, gamma, s_min)
    return Frame(S=S, W=frame_from_gram(S, K if d is None else d), gamma=float(gamma), s_min=float(s_min))


@dataclass(frozen=True)
class FixedFrameOptimum:
    """The UFM optimum with the classifier fixed to a frame W: one feature per class (K×d) and F*."""

    features: np.ndarray  # (K, d) the feature of every class-k sample
    value: float  # F* = Σ_k (n_k/N)·ℓ_k(h_k) + λ_H/2·Σ_k n_k‖h_k‖²
    grad_norm: float  # ‖∇‖ of the per-class problems at the returned point (convergence check)


def haframe_optimum(W: np.ndarray, S: np.ndarray, counts: Sequence[int], alpha: float, wd_H: float,
                    iterations: int = 500) -> FixedFrameOptimum:
    """Minimize the HAFrame UFM objective over the features, W fixed (unit rows, WWᵀ = S):

        F(H) = (1/N) Σ_i [(1 − α)·CE(W h_i, y_i) + α·Σ_k (cos(w_k, h_i) − S_{k,y_i})²] + λ_H/2·‖H‖².

    With W fixed the samples decouple and every class-k sample solves the same problem
    min_h ℓ_k(h) + (N·λ_H/2)‖h‖², so the optimum has NC1 = 0 and is found per class (K problems in
    the row space of W, batched; float64 L-BFGS from h_k ∝ w_k). The cosine term is not convex, so this
    is a local optimum from the natural start — the one gradient descent from small features reaches
    (checked in the tests against full UFM runs).
    """
    import torch  # local: frames stays numpy-only for users who only build frames

    W_t = torch.as_tensor(np.asarray(W), dtype=torch.float64)
    S_t = torch.as_tensor(np.asarray(S), dtype=torch.float64)
    counts_t = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    K, N = len(S_t), float(counts_t.sum())
    if wd_H <= 0:
        raise ValueError("the fixed-frame optimum needs wd_H > 0 (without it the features grow without bound)")
    # coordinates in the row space of W: h = Wᵀc has ‖h‖² = cᵀSc and logits Wh = Sc; use the
    # orthonormal basis of the row space instead, so that the weight decay stays isotropic
    U, sing, Vt = torch.linalg.svd(W_t, full_matrices=False)
    keep = sing > 1e-10 * sing.max()
    B = Vt[keep]  # (r, d) orthonormal rows spanning the rows of W
    Wb = W_t @ B.T  # (K, r): the frame in that basis
    x = (Wb * 0.5).clone().requires_grad_(True)  # start: h_k = w_k / 2
    decay = 0.5 * N * wd_H

    def class_objective(xk: torch.Tensor, ek: torch.Tensor, sk: torch.Tensor) -> torch.Tensor:
        """ℓ_k(h) + (N·λ_H/2)‖h‖² for one class's feature (in the basis B); ek = e_k, sk = row k of S."""
        z = Wb @ xk
        ce = torch.logsumexp(z, 0) - z @ ek
        cos = ((z / xk.norm() - sk) ** 2).sum()
        return (1 - alpha) * ce + alpha * cos + decay * xk.square().sum()

    per_class = torch.func.vmap(class_objective)
    labels = (torch.eye(K, dtype=torch.float64), S_t)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=iterations, history_size=50, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-14, tolerance_change=0.0)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        f = per_class(x, *labels).sum()
        f.backward()
        return f

    opt.step(closure)
    # L-BFGS stalls near ‖∇‖ ~ 1e-6 on the flat norm direction; Newton's method per class (exact
    # K Hessians of size r, batched) then converges quadratically to float64 round-off
    grad_fn = torch.func.vmap(torch.func.grad(class_objective))
    # reverse-over-reverse (torch.func.hessian is forward-over-reverse, whose first use emits a torch-internal
    # deprecation warning)
    hess_fn = torch.func.vmap(torch.func.jacrev(torch.func.grad(class_objective)))
    xv = x.detach().clone()
    if K * len(B) ** 2 <= 5e7:  # memory of the K Hessians: up to ~400 MB in float64
        for _ in range(20):
            g = grad_fn(xv, *labels)
            if float(g.norm()) < 1e-12:
                break
            xv = xv - torch.linalg.solve(hess_fn(xv, *labels), g.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        value = float((counts_t / N) @ per_class(xv, *labels))
        grad = float(grad_fn(xv, *labels).norm())
        features = (xv @ B).numpy()
    return FixedFrameOptimum(features=features, value=value, grad_norm=grad)


# the spherical codes (the generalized-NC targets beyond the simplex ETF) live in analysis.spherical_codes; these
# names stay importable from here
from analysis.spherical_codes import (  # noqa: E402 - after FrameError, which simplex_etf_points raises
    CodeBudgetError,
    SphericalCode,
    code_feasible,
    simplex_etf_points,
    spherical_code,
)

__all__ = ["CodeBudgetError", "FixedFrameOptimum", "Frame", "FrameError", "SphericalCode", "code_feasible",
           "decay_matrix", "frame_from_gram", "haframe", "haframe_gram", "haframe_optimum", "psd_bound",
           "simplex_etf_points", "spherical_code"]
