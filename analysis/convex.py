"""Certified global optima (cvxpy): the UFM's convex nuclear-norm program and the layer-peeled model.

Nuclear-norm program (DESIGN §5.2). For any loss convex in the logits and d ≥ K, the UFM optimum is
    min_{Z,b} (1/N) Σ_i ℓ(z_i + b, y_i) + √(λ_Wλ_H)‖Z‖_* + λ_b/2‖b‖²,
because min_{HWᵀ=Z} λ_W/2‖W‖² + λ_H/2‖H‖² = √(λ_Wλ_H)‖Z‖_*. Its optimum has identical rows within a class
(for fixed W and b each sample's feature solves the same strictly convex problem), so Z = E Ẑ with E
the N×K class indicator and Ẑ K×K. Writing E = Q D^{1/2} (Q orthonormal columns, D = diag(n_k)),
‖E Ẑ‖_* = ‖D^{1/2} Ẑ‖_*: the program is solved over X = D^{1/2} Ẑ, a K×K matrix, whatever N is.
A balanced factorization X = U S Vᵀ gives W = V S^{1/2}(λ_H/λ_W)^{1/4} and the class-k feature
h_k = (D^{-1/2} U S^{1/2})_k (λ_W/λ_H)^{1/4}. For d < rank(Z) the program is a relaxation: its value
is then a lower bound on the UFM's.

Layer-peeled model (Fang, He, Long & Su 2021): min (1/N) Σ_k n_k CE(W h_k, k) subject to
(1/K) Σ_k ‖w_k‖² <= E_W and (1/K) Σ_k ‖h_k‖² <= E_H (features equal within a class at the optimum).
Its SDP relaxation over the 2K×2K Gram of (h_1..h_K, w_1..w_K) is exact for d >= 2K. Minority
collapse: with imbalanced classes the minority classifiers become parallel beyond a critical ratio.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

from analysis.metrics import etf_distance

LOSSES = ("mse", "ce", "ls", "soft")
# the open-source conic solver shipped with cvxpy; tight tolerances: the value is a certificate
SOLVER = "CLARABEL"
SOLVER_OPTIONS = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500}


@dataclass
class ConvexOptimum:
    """The certified optimum of the UFM for a loss convex in the logits."""

    value: float  # F*, the UFM's global minimum (a lower bound when d < rank)
    class_logits: np.ndarray  # (K, K): row k = logits z + b of every class-k sample
    b: np.ndarray  # (K,)
    W: np.ndarray  # (K, r) balanced factor, r = numerical rank of Z
    features: np.ndarray  # (K, r) the feature of every class-k sample
    rank: int
    status: str
    seconds: float
    predicted: dict[str, float] = field(default_factory=dict)
    grams: dict[str, np.ndarray] = field(default_factory=dict)  # "W" and "means" (centered), K×K

    @property
    def Z(self) -> np.ndarray:
        """(K, K): row k = H Wᵀ for a class-k sample (the logits without the bias); Z_N×K = Z[y]."""
        return self.class_logits - self.b

    def H(self, y: np.ndarray) -> np.ndarray:
        """The N×r features of samples with labels y (rows of `features`)."""
        return self.features[np.asarray(y)]


def class_targets(K: int, loss: str, smoothing: float = 0.0, target_scale: float = 1.0,
                  soft_targets: np.ndarray | None = None) -> np.ndarray:
    """(K, K) row k = the target of class k: s·e_k (mse), e_k (ce), (1 − α)e_k + α/K (ls), given (soft)."""
    if loss == "soft":
        if soft_targets is None:
            raise ValueError("loss 'soft' needs soft_targets, a (K, K) row-stochastic matrix")
        return np.asarray(soft_targets, dtype=float)
    eye = np.eye(K)
    if loss == "mse":
        return target_scale * eye
    if loss == "ls":
        return (1 - smoothing) * eye + smoothing / K
    if loss == "ce":
        return eye
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def nuclear_norm_certificate(counts: Sequence[int], loss: str, wd_W: float, wd_H: float, wd_b: float = 0.0,
                             bias: bool = False, *, smoothing: float = 0.0, target_scale: float = 1.0,
                             soft_targets: np.ndarray | None = None) -> ConvexOptimum:
    """Solve min_{Z,b} (1/N)Σ ℓ(z_i + b, y_i) + √(λ_Wλ_H)‖Z‖_* + λ_b/2‖b‖² (b = 0 without bias).

    `loss`: "mse" (½‖z − s·e_y‖²), "ce", "ls" (label smoothing α), "soft" (CE against `soft_targets`).
    Returns the optimum value, the per-class logits, a balanced factorization and the predicted
    quantities (loss, W_norm_sq, H_norm_sq, b_mean, z_true, z_other, logit_gap, nc1..nc3, nc2_W).
    """
    counts = np.asarray(counts, dtype=float)
    K, N = len(counts), float(counts.sum())
    if wd_W <= 0 or wd_H <= 0:
        raise ValueError("the nuclear-norm program needs wd_W > 0 and wd_H > 0")
    T = class_targets(K, loss, smoothing, target_scale, soft_targets)
    rho = math.sqrt(wd_W * wd_H)
    weights = counts / N
    X = cp.Variable((K, K))
    b = cp.Variable(K) if bias else None
    L = np.diag(1 / np.sqrt(counts)) @ X  # per-class logits without bias
    if b is not None:
        L = L + np.ones((K, 1)) @ cp.reshape(b, (1, K), order="C")
    if loss == "mse":
        data = 0.5 * cp.sum(weights @ cp.square(L - T))
    else:  # CE against target distributions: lse(z) − q·z
        data = weights @ (cp.log_sum_exp(L, axis=1) - cp.sum(cp.multiply(T, L), axis=1))
    objective = data + rho * cp.normNuc(X)
    if b is not None and wd_b > 0:
        objective = objective + wd_b / 2 * cp.sum_squares(b)
    problem = cp.Problem(cp.Minimize(objective))
    start = time.perf_counter()
    problem.solve(solver=SOLVER, **SOLVER_OPTIONS)
    seconds = time.perf_counter() - start
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"convex solver ended with status {problem.status}")
    Xv = np.asarray(X.value)
    bv = np.asarray(b.value) if b is not None else np.zeros(K)
    if loss != "mse" and wd_b == 0:
        # CE ignores a constant shift of the logits: an unregularized bias is determined up to a
        # constant, which gradient descent from b = 0 keeps at mean 0 (the CE gradient sums to 0)
        bv = bv - bv.mean()
    return _factorize(Xv, bv, counts, T, loss, rho, wd_W, wd_H, wd_b, problem, seconds)


def _factorize(X: np.ndarray, b: np.ndarray, counts: np.ndarray, T: np.ndarray, loss: str, rho: float,
               wd_W: float, wd_H: float, wd_b: float, problem: cp.Problem, seconds: float) -> ConvexOptimum:
    K, N = len(counts), counts.sum()
    U, S, Vt = np.linalg.svd(X)
    r = int((S > 1e-7 * max(S.max(), 1e-300)).sum())
    U, S, Vt = U[:, :r], S[:r], Vt[:r]
    W = Vt.T * np.sqrt(S) * (wd_H / wd_W) ** 0.25
    feats = (U / np.sqrt(counts)[:, None]) * np.sqrt(S) * (wd_W / wd_H) ** 0.25
    logits = feats @ W.T + b
    # the objective evaluated at the factorization, in float64 (the solver's value agrees to its tolerance)
    if loss == "mse":
        data = 0.5 * (counts @ ((logits - T) ** 2).sum(1)) / N
    else:
        z_max = logits.max(1, keepdims=True)
        lse = (z_max + np.log(np.exp(logits - z_max).sum(1, keepdims=True))).ravel()
        data = counts @ (lse - (T * logits).sum(1)) / N
    value = float(data + rho * S.sum() + wd_b / 2 * b @ b)
    z_true = np.diag(logits)
    z_other = (logits.sum(1) - z_true) / (K - 1)
    scale = max(1.0, float(np.abs(logits).max()))

    def snap(v: float) -> float:
        """Solver round-off (~1e-7 of the logits) is not a prediction: report it as 0."""
        return 0.0 if abs(v) <= 1e-6 * scale else v

    p: dict[str, float] = {
        "loss": value,
        "W_norm_sq": float((W**2).sum()),
        "H_norm_sq": float(counts @ (feats**2).sum(1)),
        "z_true": snap(float(counts @ z_true / N)),
        "z_other": snap(float(counts @ z_other / N)),
        "logit_gap": snap(float(counts @ (z_true - z_other) / N)),
    }
    if b.any():
        p["b_mean"] = snap(float(b.mean()))
    M = feats - counts @ feats / N
    if r > 0:
        p.update(nc1=0.0, nc2=etf_distance(M @ M.T), nc3=etf_distance(W @ M.T), nc2_W=etf_distance(W @ W.T))
        if (logits.argmax(1) == np.arange(K)).all():
            p.update(nc4=0.0, accuracy=1.0)
    return ConvexOptimum(value, logits, b, W, feats, r, problem.status, seconds, p, {"W": W @ W.T, "means": M @ M.T})


@dataclass
class LayerPeeled:
    """Solution of the layer-peeled model's SDP: Grams of class features and classifiers."""

    value: float
    gram_features: np.ndarray  # (K, K) h_j · h_k
    gram_classifiers: np.ndarray  # (K, K) w_j · w_k
    status: str


def layer_peeled_model(counts: Sequence[int], E_W: float = 1.0, E_H: float = 1.0) -> LayerPeeled:
    """Fang et al. 2021's layer-peeled model with CE, solved as an SDP over G = Gram(h_1..h_K, w_1..w_K)."""
    counts = np.asarray(counts, dtype=float)
    K = len(counts)
    G = cp.Variable((2 * K, 2 * K), PSD=True)
    logits = G[K:, :K].T  # row k: w_j · h_k over j
    weights = counts / counts.sum()
    loss = weights @ (cp.log_sum_exp(logits, axis=1) - cp.diag(logits))
    constraints = [cp.trace(G[K:, K:]) / K <= E_W, cp.trace(G[:K, :K]) / K <= E_H]
    problem = cp.Problem(cp.Minimize(loss), constraints)
    problem.solve(solver=SOLVER, **SOLVER_OPTIONS)
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"convex solver ended with status {problem.status}")
    Gv = np.asarray(G.value)
    return LayerPeeled(float(problem.value), Gv[:K, :K], Gv[K:, K:], problem.status)


def mean_pairwise_cosine(gram: np.ndarray, members: Sequence[int]) -> float:
    """Mean cosine between the vectors `members` of a Gram matrix (1: all parallel; NaN once any of
    them has vanished, below 1e-4 of the largest norm in the Gram — the solver resolves Gram entries to
    ~1e-10, so norms to ~1e-5 — where a cosine means nothing)."""
    idx = list(members)
    if len(idx) < 2:
        return math.nan  # no pairs
    g = gram[np.ix_(idx, idx)]
    norms = np.sqrt(np.clip(np.diag(g), 0, None))
    # vanished relative to the largest vector, or in absolute terms (a Gram of round-off: everything
    # collapsed to 0, e.g. under strong weight decay)
    if norms.min() <= 1e-4 * np.sqrt(np.clip(np.diag(gram), 0, None)).max() or norms.max() <= 1e-6:
        return math.nan
    cos = g / np.outer(norms, norms)
    return float(cos[np.triu_indices(len(idx), 1)].mean())


def minority_collapse(ratios: Sequence[float], K_A: int = 7, K_B: int = 3, n_B: float = 1.0,
                      E_W: float = 5.0, E_H: float = 5.0) -> dict[str, np.ndarray]:
    """Layer-peeled prediction of minority collapse: for each imbalance ratio R = n_A/n_B, the mean
    cosine between the K_B minority classifiers and the ratio of their mean norm to the majority
    classifiers' (Fang et al. 2021). Budgets E_W = E_H = 5 by default: with budgets of 1 the minority
    classifiers already vanish at R = 2 (measured), before they can become parallel."""
    cosines, norms = [], []
    minority = range(K_A, K_A + K_B)
    for R in ratios:
        sol = layer_peeled_model([R * n_B] * K_A + [n_B] * K_B, E_W, E_H)
        w = np.sqrt(np.clip(np.diag(sol.gram_classifiers), 0, None))
        cosines.append(mean_pairwise_cosine(sol.gram_classifiers, minority))
        norms.append(float(w[K_A:].mean() / w[:K_A].mean()))
    return {"ratio": np.asarray(ratios, dtype=float), "minority_cosine": np.asarray(cosines),
            "minority_norm_ratio": np.asarray(norms)}


def _first_ratio(holds, lo: float, hi: float) -> float:
    """Smallest R in [lo, hi] where the monotone predicate `holds(R)` turns true (bisection on log R)."""
    if not holds(hi):
        return math.inf
    if holds(lo):
        return lo
    while hi / lo > 1.001:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if holds(mid) else (mid, hi)
    return hi


def critical_ratios(K_A: int = 7, K_B: int = 3, E_W: float = 5.0, E_H: float = 5.0, tol: float = 1e-3,
                    hi: float = 1e5) -> dict[str, float]:
    """The ratios R at which the minority classifiers become parallel (mean cosine >= 1 − tol, or already
    vanished) and at which they vanish (norm ratio <= tol); inf if not reached by `hi`."""
    def at(R: float) -> dict[str, np.ndarray]:
        return minority_collapse([R], K_A, K_B, E_W=E_W, E_H=E_H)

    def parallel(R: float) -> bool:
        sol = at(R)
        # vanished minority classifiers lie beyond the parallel regime: the predicate stays monotone
        # in R, so the bisection finds where the cosine first reaches 1 − tol
        return bool(sol["minority_norm_ratio"][0] <= tol or sol["minority_cosine"][0] >= 1 - tol)

    return {
        "parallel": _first_ratio(parallel, 1.0, hi),
        "vanish": _first_ratio(lambda R: at(R)["minority_norm_ratio"][0] <= tol, 1.0, hi),
    }


def ufm_critical_ratio(K_A: int, K_B: int, n_A: float, wd_W: float, wd_H: float, loss: str = "ce",
                       tol: float = 1e-3, hi: float = 1e5, wd_b: float = 0.0, bias: bool = False) -> float:
    """The imbalance ratio R from which the weight-decayed UFM's own global optimum (the nuclear-norm
    program, class counts n_A and n_A/R) has parallel minority classifiers (mean cosine >= 1 − tol, or
    vanished); inf if not reached by `hi`. Class counts enter the program as weights, so R is continuous."""
    minority = range(K_A, K_A + K_B)

    def parallel(R: float) -> bool:
        G = nuclear_norm_certificate([n_A] * K_A + [n_A / R] * K_B, loss, wd_W, wd_H, wd_b, bias).grams["W"]
        norms = np.sqrt(np.clip(np.diag(G), 0, None))
        if norms[K_A:].mean() <= tol * norms[:K_A].mean():  # vanished: beyond the parallel regime
            return True
        return bool(mean_pairwise_cosine(G, minority) >= 1 - tol)

    return _first_ratio(parallel, 1.0, hi)
