"""Which theory target applies to a configuration: a closed form, else the certified convex optimum, else why
none does (the summary's core: theory, gap, rel_gap)."""

from __future__ import annotations

import math

import numpy as np

from analysis.frames import haframe_optimum
from analysis.hierarchical_metrics import angular_collapse, centered_gram_distance
from analysis.metrics import etf_distance
from analysis.sphere import sphere_etf, supcon_etf
from analysis.theory import (
    GRAMS_MAX_K,
    Target,
    ce_etf,
    deep_linear_mse,
    focal_etf,
    mse_bias_free,
    mse_free_bias,
    mse_free_bias_counts,
    mse_regularized_bias,
    not_applicable,
)
from ufm.problem import Problem


def closed_form(problem: Problem) -> Target:
    """The closed form for this loss, bias setting and class counts, or a Target saying why none applies.
    >>> from ufm.config import SimConfig; from ufm.problem import resolve
    >>> t = closed_form(resolve(SimConfig(K=10, n=100, loss="mse", wd=5e-4)))
    >>> t.name, round(t.predicted["loss"], 6)
    ('mse_bias_free', 0.04875)
    """
    cfg, loss = problem.cfg, problem.cfg.loss
    if cfg.features == "nonneg":
        return nonneg_target(problem)
    if cfg.normalize != "none":
        return sphere_target(problem)
    if cfg.depth > 1:
        if loss.name == "mse" and not cfg.bias:
            linear = deep_linear_mse(cfg.class_counts, cfg.d, cfg.width, cfg.depth, cfg.wd_W, cfg.wd_H, cfg.wd_M,
                                     loss.target_scale)
            if cfg.act == "linear" or not linear.applies:
                return linear
            # ReLU: the best deep-neural-collapse configuration has every layer's class means on orthogonal
            # non-negative directions, where each ReLU is the identity: it is the deep linear optimum
            return Target("dnc", True, "the best deep-neural-collapse configuration (orthogonal non-negative "
                                       "frames, on which every ReLU is the identity: the deep linear optimum); "
                                       "optimal for K = 2 (Súkeník et al. 2023); lower-rank solutions can beat it "
                                       "beyond two classes and layers (Súkeník, Lampert & Mondelli 2024, 'Neural "
                                       "collapse versus low-rank bias'): found below it at L >= 4, and at L = 3 "
                                       "only for larger K and λ (K = 10), by brute force: see 'dnc'",
                          linear.predicted)
        return not_applicable("deep_ufm", f"no closed form for depth {cfg.depth} with {cfg.act} layers under "
                                          f"{loss.name}{' with a bias' if cfg.bias else ''} (the deep linear "
                                          "bias-free MSE UFM has one; the SQI check applies to the square loss)")
    if loss.name == "mse":
        if not cfg.bias:
            return mse_bias_free(cfg.class_counts, cfg.d, cfg.wd_W, cfg.wd_H, loss.target_scale)
        if not cfg.balanced:
            if cfg.wd_b == 0:
                return mse_free_bias_counts(cfg.class_counts, cfg.d, cfg.wd_W, cfg.wd_H, loss.target_scale)
            return not_applicable("mse_bias", "the closed form with a regularized bias needs balanced classes")
        if cfg.wd_b == 0:
            return mse_free_bias(cfg.K, cfg.n, cfg.d, cfg.wd_W, cfg.wd_H, loss.target_scale)
        return mse_regularized_bias(cfg.K, cfg.n, cfg.d, cfg.wd_W, cfg.wd_H, cfg.wd_b, loss.target_scale)
    if loss.name in ("ce", "ls"):
        smoothing = loss.smoothing if loss.name == "ls" else 0.0
        name = "ce_etf" if smoothing == 0 else "ls_etf"
        if not cfg.balanced:
            return not_applicable(name, "the CE closed form needs balanced classes "
                                        "(imbalance leads to minority collapse)")
        # with or without a bias: the optimal bias is constant across classes (CE ignores a constant
        # shift of the logits), so the bias-free optimum is the optimum
        return ce_etf(cfg.K, cfg.n, cfg.d, cfg.wd_W, cfg.wd_H, smoothing)
    if loss.name == "focal":
        if not cfg.balanced:
            return not_applicable("focal_etf", "the focal closed form needs balanced classes")
        return focal_etf(cfg.K, cfg.n, cfg.d, cfg.wd_W, cfg.wd_H, loss.focal_gamma)  # a constant bias is free
    if loss.name == "haframe":
        return haframe_target(problem)
    if loss.name == "hug":
        return hug_target(problem)
    if loss.name == "hxe":
        return not_applicable("hxe", "HXE is not convex in the logits (a weighted difference of log-sum-exps), "
                                     "so there is no closed form and no certificate: the measured geometry is "
                                     "reported (see 'hierarchy')")
    if loss.name == "soft":
        return not_applicable("soft", "soft labels have no closed form")
    return not_applicable("none", f"no closed form for loss {loss.name!r}")


def sphere_target(problem: Problem) -> Target:
    """On the unit sphere with temperature τ (analysis.sphere): CE, label smoothing or focal with the features,
    the classifier or both normalized (the simplex ETF with its scale from a one-dimensional problem), and the
    supervised contrastive loss of the normalized features (Graf et al. 2021)."""
    cfg, loss = problem.cfg, problem.cfg.loss
    if loss.name == "supcon":
        if not cfg.balanced:
            return not_applicable("supcon_etf", "the SupCon optimum is known for balanced classes")
        return supcon_etf(cfg.K, cfg.n, cfg.d, cfg.temperature)
    if loss.name not in ("ce", "ls", "focal"):
        return not_applicable("sphere_etf", f"no closed form on the sphere under {loss.name}")
    if not cfg.balanced:
        return not_applicable("sphere_etf", "the ETF on the sphere needs balanced classes")
    return sphere_etf(cfg.K, cfg.n, cfg.d, cfg.temperature, cfg.normalize, loss.name, cfg.wd_W, cfg.wd_H,
                      loss.smoothing if loss.name == "ls" else 0.0, loss.focal_gamma)


def nonneg_target(problem: Problem) -> Target:
    """Non-negative features ReLU(H) (Tirer & Bruna 2022). Bias-free MSE, one layer: the free-feature optimum
    has the classes' features on orthogonal directions, which can be taken non-negative (ReLU(H) = H there, and
    the decay is on H), so non-negative features reach the same optimum: `mse_bias_free`. Elsewhere (e.g. CE,
    whose ETF needs negative cosines) no closed form, and the convex program's value is only a lower bound."""
    cfg, loss = problem.cfg, problem.cfg.loss
    if cfg.depth == 1 and loss.name == "mse" and not cfg.bias:
        t = mse_bias_free(cfg.class_counts, cfg.d, cfg.wd_W, cfg.wd_H, loss.target_scale)
        if t.applies:
            return Target("mse_nonneg", True, "non-negative features reach the bias-free MSE optimum: its class "
                                              "means are orthogonal and can be taken non-negative", t.predicted,
                          t.grams)
        return t
    return not_applicable("nonneg_features", f"no closed form for non-negative features under {loss.name}"
                                             f"{' with a bias' if cfg.bias else ''} at depth {cfg.depth}; the "
                                             "convex program's value is only a lower bound")


def hug_target(problem: Problem) -> Target:
    """HUG collapses every class onto its proxy (NC1 = 0, spherical spread 0) and spreads the proxies
    as uniformly as its measure allows: the simplex ETF for K <= d + 1, a spherical code beyond."""
    cfg, code = problem.cfg, problem.code
    if code is None:
        return not_applicable("spherical_code", problem.code_note)
    deg = math.degrees(code.min_angle)
    predicted = {"nc1": 0.0, "spherical_spread": 0.0, "energy_W": code.energy, "energy_means": code.energy,
                 "min_angle_W": deg, "min_angle_means": deg, "nc4": 0.0, "accuracy": 1.0}
    if code.exact:
        predicted.update(nc2=0.0, nc3=0.0)
        return Target("simplex_etf", True,
                      f"K = {cfg.K} <= d + 1 = {cfg.feature_dim + 1}: the proxies form a simplex ETF",
                      predicted)
    dim = cfg.feature_dim
    reason = {"energy": f"the minimal Riesz s = {code.s:g} energy code of {cfg.K} points in R^{dim}",
              "maxmin": f"the max-min-angle code of {cfg.K} points in R^{dim}"}[code.kind]
    if cfg.loss.hug_measure == "gram":
        reason += " (a reference: the Gram-determinant measure's own optimum can differ from it)"
    # how good the numerical code is: its gaps to the bounds no code beats (the gnc block has them all)
    q = code.quality()
    search = (f"best of {code.restarts} numerical restart{'s' if code.restarts != 1 else ''}"
              f"{', from the cache' if code.cached else ''}"
              f"{', cut by the time budget (code_budget)' if code.timed_out else ''}"
              f"{', at its iteration cap' if not code.timed_out and not code.converged else ''}")
    quality = (f"min angle {q['angle_gap_to_bound_deg']:.3g}° below the {q['angle_bound_name']} bound, energy "
               f"{q['energy_rel_gap_to_bound']:.1e} above the ULB")
    return Target("spherical_code", True, f"{reason} ({search}; {quality})", predicted)


def haframe_target(problem: Problem) -> Target:
    """The fixed-frame optimum (`analysis.frames.haframe_optimum`): NC1 = 0, and the class means at the
    per-class optimum, which sits close to but not on the frame (CE pulls the features off S)."""
    cfg = problem.cfg
    if cfg.wd_H <= 0:
        return not_applicable("haframe_optimum", "needs wd_H > 0 (without it the features grow without bound)")
    frame = problem.frame
    opt = haframe_optimum(frame.W, frame.S, cfg.class_counts, cfg.loss.alpha, cfg.wd_H)
    if not opt.grad_norm <= 1e-8 * max(1.0, abs(opt.value)) * cfg.K:
        return not_applicable("haframe_optimum", f"the per-class problem did not converge (gradient "
                                                 f"{opt.grad_norm:.1e}): no prediction")
    counts = np.asarray(cfg.class_counts, dtype=float)
    F = opt.features
    M = F - counts @ F / counts.sum()
    unit = F / np.linalg.norm(F, axis=1, keepdims=True)
    angular_mean, angular_std = angular_collapse(F, frame.S)
    predicted = {
        "loss": opt.value, "W_norm_sq": float((frame.W**2).sum()), "H_norm_sq": float(counts @ (F**2).sum(1)),
        "nc1": 0.0, "nc2": etf_distance(M @ M.T), "nc3": etf_distance(frame.W @ M.T),
        "angular_mean": angular_mean, "angular_std": angular_std,
        "hier_nc2": centered_gram_distance(F @ F.T, frame.S),
    }
    reason = (f"W is fixed to the frame, so the classes decouple: each class's feature solves the same "
              f"small problem (float64 L-BFGS, gradient {opt.grad_norm:.1e}); the optimum sits at angular "
              f"distance {angular_mean:.2e} from the ideal frame S")
    grams = {"means_cos": unit @ unit.T} if cfg.K <= GRAMS_MAX_K else {}
    return Target("haframe_optimum", True, reason, predicted, grams)


def theory_target(problem: Problem, convex=None) -> Target:
    """The closed form where one applies; else the certified convex optimum's geometry; else why not."""
    cfg = problem.cfg
    target = closed_form(problem)
    if target.applies or convex is None or cfg.features == "nonneg":  # non-negative: the program only bounds
        return target
    cert = convex.certificate
    if not cert.certified:
        return not_applicable("convex_optimum", f"no closed form ({target.reason}), and the convex program was "
                                                f"not certified (relative gap {cert.rel_gap:.1e} > {cert.rtol:g}): "
                                                "no prediction")
    if cfg.d < convex.rank:
        # the convex optimum needs rank(Z) dimensions: its geometry is out of reach, its value a lower bound
        return not_applicable("convex_optimum", f"no closed form ({target.reason}), and the convex relaxation's "
                                                f"optimum needs d >= rank {convex.rank} (d = {cfg.d}): for this UFM "
                                                "its value is only a lower bound on F* (see the certificate)")
    reason = f"no closed form ({target.reason}); prediction = the certified optimum of the convex program"
    if convex.grams_note:
        reason += f" ({convex.grams_note})"
    predicted = dict(convex.predicted)
    if problem.frame_gram is not None and "means" in convex.grams:
        # where the optimum sits between the simplex ETF (nc2) and the hierarchy's frame S (hier_nc2)
        M = convex.features - convex.features.mean(0)  # centered at the mean of class means, like hier_nc2
        predicted["hier_nc2"] = centered_gram_distance(M @ M.T, problem.frame_gram)
    return Target("convex_optimum", True, reason, predicted, dict(convex.grams))
