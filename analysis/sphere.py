"""Closed-form optima on the unit sphere: CE, label smoothing and focal loss with the features, the classifier
rows or both normalized and a temperature τ (Graf et al. 2021; Lu & Steinerberger 2022; Yaras et al. 2022),
and the supervised contrastive loss of the normalized features alone (Graf et al. 2021).

The derivation (ours, written out so that every target says what it rests on). With logits z = x Wᵀ/τ,
balanced classes and w̄ = mean_k w_k, the margin of sample i is gap_i = z_y − mean_{j≠y} z_j
= (K/(K−1))⟨w_y − w̄, x_i⟩/τ. Jensen on the wrong logits gives, for each sample,
    CE ≥ g(gap) = log(1 + (K−1)e^{−gap}),   LS_α ≥ g(gap) + α(K−1)/K·gap,   focal ≥ ψ_γ(gap),
with equality when the wrong logits are equal. Cauchy–Schwarz bounds the mean margin by c·(scale) with
c = K/((K−1)τ), where the scale is 1 (both normalized; Σ_k‖ŵ_k − w̄‖² ≤ K), the rms row norm a of W
(features normalized; decay λ_W/2·K·a²) or the rms feature norm β (classifier normalized; decay
λ_H/2·N·β²). A convex margin loss f then gives F ≥ min over the scale of f(c·scale) + decay, and the simplex
ETF with x_i along w_y attains it: a one-dimensional convex problem. Label smoothing's f has its minimum at
u* = log((K − α(K−1))/α): with both blocks normalized and u* < c the bound is attained only with a direction
orthogonal to the ETF's span (d ≥ K), by tilting every feature out of it. The focal margin loss is not convex
(ψ'' < 0 where p_y is small): only with both blocks normalized does a weaker condition suffice —
u·ψ''(u) ≥ ψ'(u) on (0, 2c], checked on a fine grid — and elsewhere no target is claimed.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.theory import Target, focal_data_loss, not_applicable

MODES = ("features", "classifier", "both")
FOCAL_GRID = 20001  # points of the grid on which the focal condition u·ψ'' >= ψ' is checked


def softmax_margin_loss(u: float, K: int) -> float:
    """g(u) = log(1 + (K−1)e^{−u}): CE of a sample whose wrong logits all sit u below the true one."""
    return float(np.logaddexp(0.0, math.log(K - 1) - u))


def margin_loss(u: float, K: int, loss: str, smoothing: float = 0.0, gamma: float = 0.0) -> float:
    """The loss of a sample with equal wrong logits, u below the true one: CE g(u); label smoothing α
    g(u) + α(K−1)u/K (its targets (1 − α)e_y + α/K); focal −(1 − p)^γ log p, p = 1/(1 + (K−1)e^{−u}).
    >>> round(margin_loss(0.0, 4, "ce"), 6), round(margin_loss(0.0, 4, "ls", smoothing=0.1), 6)
    (1.386294, 1.386294)
    """
    if loss == "ce":
        return softmax_margin_loss(u, K)
    if loss == "ls":
        return softmax_margin_loss(u, K) + smoothing * (K - 1) * u / K
    if loss == "focal":
        return focal_data_loss(u, K, gamma)
    raise ValueError(f"no margin loss for {loss!r}")


def focal_margin_derivatives(u: np.ndarray, K: int, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """(ψ', ψ'') of ψ(u) = −q^γ log p, p = 1/(1 + (K−1)e^{−u}), q = 1 − p (dp/du = pq):
    ψ' = γ p q^γ log p − q^{γ+1};  ψ'' = γ p q^{γ+1} log p − γ² p² q^γ log p + (2γ + 1) p q^{γ+1}.
    >>> d1, d2 = focal_margin_derivatives(np.array([0.0]), 2, 0.0); float(d1[0]), float(d2[0])  # CE: −q, pq
    (-0.5, 0.25)
    """
    a = (K - 1) * np.exp(-np.asarray(u, dtype=float))
    p, q = 1 / (1 + a), a / (1 + a)
    log_p = -np.log1p(a)
    qg = q**gamma
    d1 = gamma * p * qg * log_p - q * qg
    d2 = gamma * p * q * qg * log_p - gamma**2 * p * p * qg * log_p + (2 * gamma + 1) * p * q * qg
    return d1, d2


def focal_sphere_condition(K: int, gamma: float, u_max: float) -> bool:
    """u·ψ''(u) − ψ'(u) >= 0 on (0, u_max] (ψ the focal margin loss): then χ(t) = ψ(c√t) is convex, and with
    both blocks on the sphere Σ_k ψ(c·r_k) under Σ_k r_k² <= K is smallest at r_k = 1 (the ETF).
    >>> focal_sphere_condition(4, 0.0, 10.0)  # CE: ψ convex and decreasing
    True
    """
    u = np.linspace(u_max / FOCAL_GRID, u_max, FOCAL_GRID)
    d1, d2 = focal_margin_derivatives(u, K, gamma)
    return bool((u * d2 - d1 >= -1e-12 * np.abs(d1)).all())


def _scale_problem(f, c: float, decay: float, top: float) -> tuple[float, float]:
    """min_{s >= 0} f(c·s) + decay·s²/2 (convex in s): (s*, value), by bounded Brent on [0, top]."""
    from scipy.optimize import minimize_scalar

    phi = lambda s: f(c * s) + 0.5 * decay * s * s  # noqa: E731
    best = minimize_scalar(phi, bounds=(0.0, top), method="bounded", options={"xatol": 1e-14 * max(1.0, top)})
    s = float(best.x)
    return (s, phi(s)) if phi(s) < phi(0.0) else (0.0, phi(0.0))


def sphere_etf(K: int, n: int, d: int, tau: float, normalize: str, loss: str = "ce", wd_W: float = 0.0,
               wd_H: float = 0.0, smoothing: float = 0.0, gamma: float = 0.0) -> Target:
    """The optimum of CE / label smoothing / focal with `normalize` ∈ {features, classifier, both} on the unit
    sphere and temperature τ, balanced, K <= d + 1 (module docstring: c = K/((K−1)τ)):
    both: F* = f(min(c, u*)) (u* = ∞ except LS); features: F* = min_a f(c·a) + λ_W·K·a²/2;
    classifier: F* = min_β f(c·β) + λ_H·N·β²/2 — the simplex ETF with every feature along its class's row.
    Label smoothing with both normalized and u* < c (the tilt): the optimum is not unique (`Target.unique` False,
    `note`), and only the value, the margin u* and the accuracy are predicted.
    >>> t = sphere_etf(4, 3, 6, 0.5, "both"); t.name, round(t.predicted["loss"], 6), round(t.predicted["logit_gap"], 6)
    ('sphere_etf', 0.189339, 2.666667)
    """
    name = "sphere_etf"
    if normalize not in MODES:
        raise ValueError(f"normalize must be one of {MODES}, got {normalize!r}")
    if K > d + 1:
        return not_applicable(name, f"K = {K} > d + 1 = {d + 1}: no simplex ETF; the optimum is a spherical code "
                                    "(see 'gnc')")
    c = K / ((K - 1) * tau)
    f = lambda u: margin_loss(u, K, loss, smoothing, gamma)  # noqa: E731
    if loss == "focal" and normalize != "both":
        return not_applicable(name, "the focal loss is not convex in the margin (ψ'' < 0 where p_y is small), so the "
                                    "Jensen argument behind the ETF needs both blocks on the sphere; with a free "
                                    "scale no optimum is proven")
    if loss == "focal" and not focal_sphere_condition(K, gamma, 2 * c):
        return not_applicable(name, f"the focal condition u·ψ'' >= ψ' fails on (0, {2 * c:g}]: the ETF is not "
                                    "proven optimal at this τ and γ")
    scale, reason = 1.0, f"τ = {tau:g}: a simplex ETF on the sphere, every feature on its class's row"
    tilted = False
    if normalize == "both":
        u = c
        if loss == "ls" and smoothing > 0:
            u_star = math.log((K - smoothing * (K - 1)) / smoothing)
            if u_star < c:
                if d < K:
                    return not_applicable(name, f"label smoothing's best margin {u_star:.4g} < K/((K−1)τ) = {c:.4g}: "
                                                "the bound needs a direction orthogonal to the ETF (d >= K) to be "
                                                "attained; for d = K − 1 no optimum is proven")
                u, scale, tilted = u_star, u_star / c, True
                reason = (f"τ = {tau:g}: label smoothing's best margin u* = {u_star:.6g} < K/((K−1)τ) = {c:.6g} is "
                          f"attained, e.g. by the simplex ETF with every feature tilted out of its span (cosine "
                          f"{scale:.6g} to its class's row)")
        value = f(u)
    elif normalize == "features":
        if wd_W <= 0:
            return not_applicable(name, "features on the sphere need wd_W > 0 (the classifier's scale is free)")
        top = math.sqrt(2 * f(0.0) / (wd_W * K))  # beyond it the decay alone exceeds F(0)
        scale, value = _scale_problem(f, c, wd_W * K, top)
        u = c * scale
        reason += f"; the classifier's row norm a* = {scale:.6g} solves a convex one-dimensional problem"
    else:
        if wd_H <= 0:
            return not_applicable(name, "a classifier on the sphere needs wd_H > 0 (the features' scale is free)")
        N = K * n
        top = math.sqrt(2 * f(0.0) / (wd_H * N))
        scale, value = _scale_problem(f, c, wd_H * N, top)
        u = c * scale
        reason += f"; the feature norm β* = {scale:.6g} solves a convex one-dimensional problem"
    if tilted:
        # the bound is attained by any features whose every margin is u* with equal wrong logits (f is strictly
        # convex about u*): a continuum of optima, the tilted ETF one of them and others far from collapse; all
        # share the value, the margin and (u* > 0) accuracy 1, and nothing else is determined
        note = (f"the optimum is not unique: every point whose samples all have margin u* = {u:.6g} with equal wrong "
                "logits attains F*, a continuum that includes points far from collapse; only the value, the margin "
                "and the accuracy are predicted, no NC1–NC4")
        return Target(name, True, reason, {"loss": value, "logit_gap": u, "accuracy": 1.0}, unique=False, note=note)
    p = {"loss": value, "logit_gap": u, "nc1": 0.0, "nc2": 0.0, "nc4": 0.0, "accuracy": 1.0 if u > 0 else 1.0 / K}
    if u > 0:
        p["nc3"] = 0.0
    if normalize == "features":
        p["W_norm_sq"] = K * scale**2
    if normalize == "classifier":
        p["H_norm_sq"] = K * n * scale**2
    return Target(name, True, reason, p)


def supcon_etf(K: int, n: int, d: int, tau: float) -> Target:
    """Supervised contrastive loss (Khosla et al. 2020) of the normalized features, full batch, balanced:
    ℓ_i = −1/|P(i)| Σ_{p∈P(i)} log(e^{ĥ_i·ĥ_p/τ} / Σ_{a≠i} e^{ĥ_i·ĥ_a/τ}), P(i) the other samples of i's class.
    Graf et al. (2021, ICML): minimized when each class collapses to one vertex of a simplex ETF (K <= d + 1);
    there every positive has cosine 1 and every negative −1/(K−1), so F* = log((n − 1) + (K − 1)·n·e^{−K/((K−1)τ)}).
    >>> round(supcon_etf(4, 3, 6, 1.0).predicted["loss"], 6)
    1.475306
    """
    name = "supcon_etf"
    if n < 2:
        return not_applicable(name, "needs n >= 2 samples per class (a sample needs a positive)")
    if K > d + 1:
        return not_applicable(name, f"K = {K} > d + 1 = {d + 1}: no simplex ETF (see 'gnc' for the spherical code)")
    g = K / ((K - 1) * tau)
    p = {"loss": math.log((n - 1) + (K - 1) * n * math.exp(-g)), "nc1": 0.0, "nc2": 0.0, "nc3": 0.0, "nc4": 0.0,
         "accuracy": 1.0, "logit_gap": g}
    return Target(name, True, f"τ = {tau:g}: every class collapses to a vertex of a simplex ETF on the sphere "
                              "(Graf et al. 2021)", p)
