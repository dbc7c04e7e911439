"""Which theory target applies to a configuration, and the convex certificate of a run's end point."""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from analysis.certificate import SOLVER_RTOL, nuclear_norm_certificate
from analysis.frames import haframe_optimum
from analysis.hierarchical_metrics import angular_collapse, centered_gram_distance
from analysis.metrics import etf_distance
from analysis.theory import (
    Target,
    ce_etf,
    etf_exists,
    mse_bias_free,
    mse_free_bias,
    mse_free_bias_counts,
    mse_regularized_bias,
    not_applicable,
)
from ufm.config import SimConfig
from ufm.problem import frame_gram, frame_of, gnc_code, soft_targets


def closed_form(cfg: SimConfig) -> Target:
    """The closed form for this loss, bias setting and class counts, or a Target saying why none applies."""
    if cfg.depth > 1:
        return not_applicable("deep_ufm", f"no closed form for depth {cfg.depth} (the SQI check applies to the "
                                          "square loss; see 'sqi')")
    if cfg.loss == "mse":
        if not cfg.bias:
            return mse_bias_free(cfg.class_counts, cfg.d, cfg.wd_W, cfg.wd_H, cfg.target_scale)
        if not cfg.balanced:
            if cfg.wd_b == 0:
                return mse_free_bias_counts(cfg.class_counts, cfg.d, cfg.wd_W, cfg.wd_H, cfg.target_scale)
            return not_applicable("mse_bias", "the closed form with a regularized bias needs balanced classes")
        if cfg.wd_b == 0:
            return mse_free_bias(cfg.K, cfg.n, cfg.d, cfg.wd_W, cfg.wd_H, cfg.target_scale)
        return mse_regularized_bias(cfg.K, cfg.n, cfg.d, cfg.wd_W, cfg.wd_H, cfg.wd_b, cfg.target_scale)
    if cfg.loss in ("ce", "ls"):
        smoothing = cfg.smoothing if cfg.loss == "ls" else 0.0
        name = "ce_etf" if smoothing == 0 else "ls_etf"
        if not cfg.balanced:
            return not_applicable(name, "the CE closed form needs balanced classes "
                                        "(imbalance leads to minority collapse)")
        # with or without a bias: the optimal bias is constant across classes (CE ignores a constant
        # shift of the logits), so the bias-free optimum is the optimum
        return ce_etf(cfg.K, cfg.n, cfg.d, cfg.wd_W, cfg.wd_H, smoothing)
    if cfg.loss == "haframe":
        return haframe_target(cfg)
    if cfg.loss == "hug":
        return hug_target(cfg)
    if cfg.loss == "hxe":
        return not_applicable("hxe", "HXE is not convex in the logits (a weighted difference of log-sum-exps), "
                                     "so there is no closed form and no certificate: the measured geometry is "
                                     "reported (see 'hierarchy')")
    if cfg.loss == "soft":
        return not_applicable("soft", "soft labels have no closed form")
    return not_applicable("none", f"no closed form for loss {cfg.loss!r}")


def hug_target(cfg: SimConfig) -> Target:
    """HUG collapses every class onto its proxy (NC1 = 0, spherical spread 0) and spreads the proxies
    as uniformly as its measure allows: the simplex ETF for K <= d + 1, a spherical code beyond."""
    code = gnc_code(cfg)
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
    if cfg.hug_measure == "gram":
        reason += " (a reference: the Gram-determinant measure's own optimum can differ from it)"
    return Target("spherical_code", True, reason + " (best of the numerical restarts)", predicted)


def gnc_summary(cfg: SimConfig, final: dict) -> dict:
    """The `gnc` block: the measured uniformity of proxies and class means against the target code of
    this K and d (the ETF or the spherical code), reported for HUG and for every run with K > d + 1."""
    code = gnc_code(cfg)
    deg = math.degrees(code.min_angle)
    out = {"etf_exists": etf_exists(cfg.K, cfg.feature_dim),
           "target": {"kind": "simplex_etf" if code.exact else f"{code.kind}_code", "s": code.s,
                      "energy": code.energy, "min_angle_deg": deg}}
    for who in ("W", "means"):
        e, a = final.get(f"energy_{who}"), final.get(f"min_angle_{who}")
        if e is not None and math.isfinite(e):
            out[f"energy_{who}"], out[f"energy_rel_gap_{who}"] = e, (e - code.energy) / abs(code.energy)
        if a is not None and math.isfinite(a):
            out[f"min_angle_{who}"], out[f"angle_gap_{who}_deg"] = a, deg - a
    return out


def haframe_target(cfg: SimConfig) -> Target:
    """The fixed-frame optimum (`analysis.frames.haframe_optimum`): NC1 = 0, and the class means at the
    per-class optimum, which sits close to but not on the frame (CE pulls the features off S)."""
    if cfg.wd_H <= 0:
        return not_applicable("haframe_optimum", "needs wd_H > 0 (without it the features grow without bound)")
    frame = frame_of(cfg)
    opt = haframe_optimum(frame.W, frame.S, cfg.class_counts, cfg.alpha, cfg.wd_H)
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
    return Target("haframe_optimum", True, reason, predicted, {"means_cos": unit @ unit.T})


def convex_optimum(cfg: SimConfig, progress: bool = False):
    """(ConvexOptimum, "") from analysis.certificate (the first-order solver on the count-group program,
    certified by its dual bound), or (None, why it was skipped). A progress bar appears on stderr when
    the solve takes more than two seconds."""
    if cfg.depth > 1:
        return None, f"depth {cfg.depth}: the deep UFM is not a nuclear-norm program"
    if cfg.loss in ("hxe", "haframe", "hug"):
        return None, {"hxe": "HXE is not convex in the logits",
                      "haframe": "the HAFrame classifier is fixed: no nuclear-norm program",
                      "hug": "HUG is a loss of directions, not of logits: no nuclear-norm program"}[cfg.loss]
    if min(cfg.wd_W, cfg.wd_H) <= 0:
        return None, "needs wd_W > 0 and wd_H > 0"
    bar = CertificateProgress() if progress else None
    try:
        return nuclear_norm_certificate(cfg.class_counts, cfg.loss, cfg.wd_W, cfg.wd_H, cfg.wd_b, cfg.bias,
                                        smoothing=cfg.smoothing, target_scale=cfg.target_scale,
                                        soft_targets=soft_targets(cfg) if cfg.loss == "soft" else None,
                                        callback=bar), ""
    except (RuntimeError, ValueError) as e:
        return None, f"solver failed: {e}"
    finally:
        if bar is not None:
            bar.close()


class CertificateProgress:
    """A progress bar over the certificate's relative gap (log scale, from the first bound to the
    solver's target) on stderr, opened only once the solve has run for DELAY seconds (tqdm's own `delay`
    is not enough: a postfix update draws the bar at once, measured). Use as the solver's callback:
    >>> bar = CertificateProgress(); bar(5, 1.0, 0.5); bar.close()   # under 2 s: draws nothing
    """

    DELAY = 2.0

    def __init__(self) -> None:
        self.start, self.bar, self.first = time.perf_counter(), None, None

    def __call__(self, iteration: int, upper: float, lower: float) -> None:
        gap = max((upper - lower) / max(abs(upper), 1e-300), SOLVER_RTOL)
        self.first = self.first or max(gap, SOLVER_RTOL * 10)
        if self.bar is None:
            if time.perf_counter() - self.start < self.DELAY:
                return
            from tqdm import tqdm

            self.bar = tqdm(total=100, desc="certificate", file=sys.stderr, dynamic_ncols=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}")
        done = math.log(self.first / gap) / math.log(self.first / SOLVER_RTOL)
        self.bar.n = round(100 * min(1.0, max(0.0, done)))
        self.bar.set_postfix_str(f"iteration {iteration}, relative gap {gap:.1e}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def theory_target(cfg: SimConfig, convex=None) -> Target:
    """The closed form where one applies; else the certified convex optimum's geometry; else why not."""
    target = closed_form(cfg)
    if target.applies or convex is None:
        return target
    cert = convex.certificate
    if not cert.certified:
        return not_applicable("convex_optimum", f"no closed form ({target.reason}), and the convex program was "
                                                f"not certified (relative gap {cert.rel_gap:.1e} > {cert.rtol:g}): "
                                                "no prediction")
    if cfg.d < convex.rank:
        # the convex optimum needs rank(Z) dimensions: its geometry is out of reach, its value a lower bound
        return not_applicable("convex_optimum", f"no closed form ({target.reason}), and the convex optimum "
                                                f"needs d >= rank {convex.rank} (d = {cfg.d}); its value is "
                                                "only a lower bound (see the certificate)")
    reason = f"no closed form ({target.reason}); prediction = the certified optimum of the convex program"
    predicted = dict(convex.predicted)
    if cfg.hierarchy is not None and "means" in convex.grams:
        # where the optimum sits between the simplex ETF (nc2) and the hierarchy's frame S (hier_nc2)
        M = convex.features - convex.features.mean(0)  # centered at the mean of class means, like hier_nc2
        predicted["hier_nc2"] = centered_gram_distance(M @ M.T, frame_gram(cfg)[0])
    return Target("convex_optimum", True, reason, predicted, dict(convex.grams))


def certificate(cfg: SimConfig, convex, skipped: str, final_loss: float | None) -> dict:
    """The certificate block: the convex program's primal value (upper) and dual bound (lower) on the
    global optimum F*, "certified" when their relative gap is <= rtol, and the run's distance to the
    lower bound (gap = objective − lower >= 0 always; about 0 means the run is at the global optimum)."""
    if convex is None:
        return {"applies": False, "reason": skipped}
    c = convex.certificate
    out = {"applies": True, "certified": c.certified, "status": "certified" if c.certified else "not certified",
           "upper": c.upper, "lower": c.lower, "certificate_gap": c.gap, "certificate_rel_gap": c.rel_gap,
           "rtol": c.rtol, "optimum": c.upper, "solver": c.solver, "solver_seconds": c.seconds,
           "iterations": c.iterations, "lower_bound_only": cfg.d < convex.rank}
    if final_loss is not None:
        out["gap"] = final_loss - c.lower
        out["rel_gap"] = out["gap"] / abs(c.lower) if c.lower else out["gap"]
    return out
