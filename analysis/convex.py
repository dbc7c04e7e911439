"""The layer-peeled model and minority collapse (Fang, He, Long & Su 2021), and the critical imbalance ratios.

Layer-peeled model: min (1/N) Σ_k n_k CE(W h_k, k) subject to (1/K) Σ_k ‖w_k‖² <= E_W and
(1/K) Σ_k ‖h_k‖² <= E_H (features equal within a class at the optimum). Its SDP relaxation over the 2K×2K
Gram of (h_1..h_K, w_1..w_K) is exact for d >= 2K. Minority collapse: with imbalanced classes the
minority classifiers become parallel beyond a critical ratio.

The weight-decayed UFM's own global optimum (the nuclear-norm program, certified by a dual bound) lives
in `analysis.certificate`; `nuclear_norm_certificate` is importable from here too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from analysis.certificate import CVXPY_OPTIONS as SOLVER_OPTIONS
from analysis.certificate import CVXPY_SOLVER as SOLVER
from analysis.certificate import nuclear_norm_certificate
from analysis.theory import minority_parallel_ratio


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
    vanished); inf if not reached by `hi`. Class counts enter the program as weights, so R is continuous.
    The search stops at the closed-form ratio (`analysis.theory.minority_parallel_ratio`), where the
    cosine is exactly 1, when that lies below `hi` (the programs of extreme ratios are the slowest)."""
    minority = range(K_A, K_A + K_B)

    @functools.lru_cache
    def parallel(R: float) -> bool:
        G = nuclear_norm_certificate([n_A] * K_A + [n_A / R] * K_B, loss, wd_W, wd_H, wd_b, bias).grams["W"]
        norms = np.sqrt(np.clip(np.diag(G), 0, None))
        if norms[K_A:].mean() <= tol * norms[:K_A].mean():  # vanished: beyond the parallel regime
            return True
        return bool(mean_pairwise_cosine(G, minority) >= 1 - tol)

    if K_B >= 2 and loss in ("ce", "mse"):
        cap = minority_parallel_ratio(K_A, K_B, n_A, wd_W, wd_H) * (1 + 1e-9)
        if cap < hi and parallel(cap):  # a closed form that disagreed would leave the search unbounded
            hi = cap
    return _first_ratio(parallel, 1.0, hi)
