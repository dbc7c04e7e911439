"""The saddle at the origin: with W = H = 0 every gradient of the bias-free part vanishes (∂F/∂W = ∇ℓ·H = 0 and
∂F/∂H = ∇ℓ·W = 0), so a run started too small (--init-scale 1e-30) sits there with a zero gradient. The origin is
a strict saddle exactly when some direction lowers F: along (W, H) = ε(u vᵀ-shaped pair), F changes by
ε²(−σ_max(G)/N + √(λ_Wλ_H)) with G = −∂(Σ_i ℓ)/∂Z at the run's logits (the balanced factorization argument), so
it is a saddle iff σ_max(G) > N·√(λ_W·λ_H). A run that escapes it slowly (from 1e-30, the norms grow by a
constant factor per step) still has F equal to F(0) to many digits and a tiny gradient: "at the saddle" is
F >= F(0) − SADDLE_RTOL·|F(0)| with the origin a strict saddle.

At the origin every sample of class k has the logits b, so G has one row per class repeated n_k times and
σ_max(G) = σ_max(D^{1/2} G_K) with G_K the K × K per-class gradients and D = diag(n_k): computed from K rows, not N,
and in blocks of classes (Lanczos on the blocked product) where K × K exceeds the memory budget. F(0) is compared
first (a run that left the origin needs no σ_max at all), then Schur's bound σ_max² <= ‖G‖₁‖G‖_∞ (one pass: below
the threshold, no saddle)."""

from __future__ import annotations

import math

import numpy as np
import torch

from analysis.blocked import block_rows, memory_budget, row_blocks
from ufm.model import AUTOGRAD_COPIES
from ufm.problem import Problem

SADDLE_RTOL = 1e-6  # an objective within this (relative) of F(0) has not left the saddle


def origin_saddle(problem: Problem, params: dict[str, torch.Tensor], y: torch.Tensor, loss: float) -> str | None:
    """A sentence when the run (final objective `loss`) has not left the origin W = H = 0 and the origin is a
    strict saddle (a depth-1 UFM whose W is trained); None otherwise. Example:
    >>> from ufm.config import SimConfig; from ufm.problem import resolve
    >>> p = resolve(SimConfig(K=3, n=4, d=5, loss="ce", wd=1e-3)); y = p.labels()
    >>> zero = {"H": torch.zeros(12, 5, dtype=torch.float64), "W": torch.zeros(3, 5, dtype=torch.float64)}
    >>> s = origin_saddle(p, zero, y, math.log(3)); s[:69]
    'at the saddle W = H = 0: F = 1.09861, its value at the origin 1.09861'
    >>> s[s.index("there"):s.index(", so")]  # σ_max(Y − 1/K) = √n = 2 against N·√(λ_W·λ_H) = 12·1e-3
    'there 2 exceeds N·sqrt(wd_W·wd_H) = 0.012'
    >>> origin_saddle(p, zero, y, 0.5) is None  # a final objective below F(0) = log 3: the run left the origin
    True
    """
    cfg = problem.cfg
    if cfg.depth > 1 or cfg.fixed_classifier or cfg.normalize != "none" or cfg.features != "free":
        return None
    if not problem.loss.rowwise:
        return None  # a loss that does not read the logits (HUG): no such saddle
    b = params["b"].detach().double() if "b" in params else None
    K, d, N = cfg.K, params["H"].shape[1], len(y)
    origin = b if b is not None else torch.zeros(K, dtype=torch.float64, device=y.device)
    zeros_W = torch.zeros(K, cfg.feature_dim, dtype=torch.float64, device=y.device)

    def at_origin(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ of the losses of samples with these labels at the origin, their gradients as rows)."""
        Z = origin.expand(len(labels), K).clone().requires_grad_(True)
        zeros_H = torch.zeros(len(labels), d, dtype=torch.float64, device=y.device)
        total = problem.loss(Z, labels, problem.options, features=zeros_H, classifier=zeros_W) * len(labels)
        if not total.requires_grad:
            return total.detach(), torch.zeros_like(Z)
        (G,) = torch.autograd.grad(total, Z, allow_unused=True)
        return total.detach(), (torch.zeros_like(Z) if G is None else G)

    rows = block_rows(K, itemsize=8, copies=AUTOGRAD_COPIES, device=y.device)
    F0 = sum(float(at_origin(y[s])[0]) for s in row_blocks(N, rows)) / N
    F0 += 0.5 * cfg.wd_b * float(b.square().sum()) if b is not None else 0.0
    if not math.isfinite(F0) or loss < F0 - SADDLE_RTOL * abs(F0):
        return None  # the run left the origin (or the loss is undefined there): nothing more to ask
    counts = torch.bincount(y, minlength=K).double()
    weight = counts.sqrt()[:, None]
    classes = torch.arange(K, device=y.device)
    threshold = N * math.sqrt(cfg.wd_W * cfg.wd_H)
    # Schur's bound ‖G‖₂² <= ‖G‖₁‖G‖_∞ (largest column and row sums of |G|), one pass over blocks of classes: where
    # it is below the threshold the origin is no saddle, and no singular value need be computed
    row_max, column_sums = 0.0, torch.zeros(K, dtype=torch.float64, device=y.device)
    for s in row_blocks(K, rows):
        A = at_origin(classes[s])[1].abs()
        if not bool(torch.isfinite(A).all()):
            return None
        row_max = max(row_max, float(A.sum(1).max()))
        column_sums += counts[s] @ A
    if math.sqrt(row_max * float(column_sums.max())) <= threshold:
        return None
    if K * K * 8 * AUTOGRAD_COPIES <= memory_budget(y.device):
        G = weight * torch.cat([at_origin(classes[s])[1] for s in row_blocks(K, rows)])
        if not bool(torch.isfinite(G).all()):
            return None
        sigma = float(torch.linalg.matrix_norm(G, ord=2))
    else:
        sigma = _blocked_top_singular_value(lambda s: weight[s] * at_origin(classes[s])[1], K, rows)
        if not math.isfinite(sigma):
            return None
    if sigma <= threshold:
        return None  # the origin is not a strict saddle: collapse to zero is the answer
    return (f"at the saddle W = H = 0: F = {loss:.6g}, its value at the origin {F0:.6g}, and the loss gradient's top "
            f"singular value there {sigma:.4g} exceeds N·sqrt(wd_W·wd_H) = {threshold:.4g}, so F decreases away "
            "from it; the gradient is small only because the run has not left the origin (raise --init-scale)")


def _blocked_top_singular_value(rows_of, K: int, rows: int) -> float:
    """σ_max of the K × K matrix whose row blocks `rows_of(slice)` computes, by Lanczos (ARPACK) on v ↦ Aᵀ(A v),
    each product recomputing the blocks: the matrix is never held."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    def gram_times(v: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(-1))
        out = torch.zeros(K, dtype=torch.float64)
        for s in row_blocks(K, rows):
            A = rows_of(s).cpu()
            out += A.T @ (A @ x)
        return out.numpy()

    value = eigsh(LinearOperator((K, K), matvec=gram_times, dtype=np.float64), k=1, which="LA",
                  return_eigenvectors=False, tol=1e-10)[0]
    return math.sqrt(max(0.0, float(value)))
