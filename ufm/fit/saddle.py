"""The saddle at the origin: with W = H = 0 every gradient of the bias-free part vanishes (∂F/∂W = ∇ℓ·H = 0 and
∂F/∂H = ∇ℓ·W = 0), so a run started too small (--init-scale 1e-30) sits there with a zero gradient. The origin is
a strict saddle exactly when some direction lowers F: along (W, H) = ε(u vᵀ-shaped pair), F changes by
ε²(−σ_max(G)/N + √(λ_Wλ_H)) with G = −∂(Σ_i ℓ)/∂Z at the run's logits (the balanced factorization argument), so
it is a saddle iff σ_max(G) > N·√(λ_W·λ_H). A run that escapes it slowly (from 1e-30, the norms grow by a
constant factor per step) still has F equal to F(0) to many digits and a tiny gradient: "at the saddle" is
F >= F(0) − SADDLE_RTOL·|F(0)| with the origin a strict saddle."""

from __future__ import annotations

import math

import torch

from ufm.model import classify
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
    p = {k: v.detach().double() for k, v in params.items()}
    zero = {**p, "W": torch.zeros_like(p["W"]), "H": torch.zeros_like(p["H"])}
    Z = classify(zero, zero["H"]).requires_grad_(True)  # the logits at the origin: the bias alone
    total = problem.loss(Z, y, problem.options, features=zero["H"], classifier=zero["W"]) * len(y)
    if not total.requires_grad:
        return None  # a loss that does not read the logits (HUG): no such saddle
    (G,) = torch.autograd.grad(total, Z, allow_unused=True)
    if G is None or not bool(torch.isfinite(G).all()):
        return None
    F0 = float(total.detach()) / len(y) + (0.5 * cfg.wd_b * float(p["b"].square().sum()) if "b" in p else 0.0)
    sigma, threshold = float(torch.linalg.matrix_norm(G, ord=2)), len(y) * math.sqrt(cfg.wd_W * cfg.wd_H)
    if sigma <= threshold or loss < F0 - SADDLE_RTOL * abs(F0):
        return None  # the origin is not a strict saddle (collapse to zero is the answer), or the run left it
    return (f"at the saddle W = H = 0: F = {loss:.6g}, its value at the origin {F0:.6g}, and the loss gradient's top "
            f"singular value there {sigma:.4g} exceeds N·sqrt(wd_W·wd_H) = {threshold:.4g}, so F decreases away "
            "from it; the gradient is small only because the run has not left the origin (raise --init-scale)")
