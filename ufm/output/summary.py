"""summary.json's core: final measurements, the theory target, the gap between them, and convergence (the
end-of-run checks add their blocks: ufm.checks)."""

from __future__ import annotations

import math

from analysis.theory import Target
from ufm.config import SimConfig

# A run counts as converged when its estimated relative suboptimality ‖∇F‖²/(2·min(λ_W, λ_H)·|F|)
# (the Polyak–Łojasiewicz bound, with the weight decay as curvature) is below this, by dtype; without
# weight decay, when ‖∇F‖ is below the second number.
CONVERGED_RTOL = {"float32": 1e-4, "float64": 1e-10}
CONVERGED_GRAD_NORM = {"float32": 1e-5, "float64": 1e-9}


def curvature(cfg: SimConfig) -> float:
    """The weight decay of the trained blocks: min(λ_W, λ_H) (and λ_M when deeper), or λ_H alone when W
    is fixed."""
    lam = cfg.wd_H if cfg.fixed_classifier else min(cfg.wd_W, cfg.wd_H)
    return min(lam, cfg.wd_M) if cfg.depth > 1 else lam


def suboptimality_estimate(grad_norm: float, loss: float, cfg: SimConfig) -> float:
    """‖∇F‖²/(2·λ) / |F| with λ = `curvature(cfg)`: relative F − F* if F is λ-strongly convex near the iterate."""
    lam = curvature(cfg)
    return grad_norm**2 / (2 * lam * abs(loss)) if lam > 0 and loss != 0 else math.inf


def is_converged(final: dict, cfg: SimConfig) -> tuple[bool, str]:
    if cfg.tol > 0:
        return final["grad_norm"] <= cfg.tol, f"grad_norm <= {cfg.tol:g} (--tol)"
    if curvature(cfg) > 0:
        rtol = CONVERGED_RTOL[cfg.dtype]
        lam = "wd_H" if cfg.fixed_classifier else "min(wd_W, wd_H, wd_M)" if cfg.depth > 1 else "min(wd_W, wd_H)"
        return final["suboptimality_estimate"] <= rtol, f"grad_norm^2/(2 {lam} |loss|) <= {rtol:g}"
    threshold = CONVERGED_GRAD_NORM[cfg.dtype]
    return final["grad_norm"] <= threshold, f"grad_norm <= {threshold:g}"


# a prediction this small is a zero: its gap is reported as absolute, not relative
ZERO_PREDICTION = 1e-12


def gaps(final: dict[str, float], predicted: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(measured − predicted, |measured − predicted|/|predicted|) for every predicted quantity measured;
    the relative gap is the absolute one where the prediction is 0 (|p| <= ZERO_PREDICTION)."""
    gap, rel = {}, {}
    for key, p in predicted.items():
        m = final.get(key)
        if m is None or not math.isfinite(m) or not math.isfinite(p):
            continue
        gap[key] = m - p
        rel[key] = abs(m - p) / abs(p) if abs(p) > ZERO_PREDICTION else abs(m - p)
    return gap, rel


# an accuracy this far from the one the theory target predicts means the run is not at the target's optimum
ACCURACY_TOL = 0.05


def doubts(final: dict, history: list[dict], target: Target) -> list[str]:
    """Why a small gradient would not mean convergence here: the training accuracy far from the target's
    (a stationary point that is not the optimum: HUG in d = 1, whose features cannot cross the sphere's two
    points), or a loss that ended above where it started."""
    out = []
    predicted = target.predicted.get("accuracy") if target.applies else None
    if predicted is not None and "accuracy" in final and abs(final["accuracy"] - predicted) > ACCURACY_TOL:
        out.append(f"training accuracy {final['accuracy']:.4g}, where {target.name} predicts {predicted:.4g}: a "
                   "stationary point that is not the optimum")
    first = next((r["loss"] for r in history if math.isfinite(r["loss"])), None)
    if first is not None and final and final["loss"] > first * (1 + 1e-6) + 1e-12:
        out.append(f"the loss ended above its start ({final['loss']:.6g} > {first:.6g})")
    return out


def build_summary(cfg: SimConfig, history: list[dict], target: Target, *, status: str, steps: int,
                  seconds: float, device: str, divergence: dict | None, saddle: str | None = None) -> dict:
    """summary.json's core. `saddle`: the sentence of ufm.fit.saddle.origin_saddle when the run sits at the saddle
    W = H = 0; with it, or with any of `doubts`, a small gradient is not reported as convergence."""
    finite_rows = [r for r in history if math.isfinite(r["loss"])]
    final = dict(finite_rows[-1]) if finite_rows else {}
    final.pop("step", None), final.pop("seconds", None)
    converged, criterion = False, "no finite measurement"
    not_converged = ([saddle] if saddle else []) + doubts(final, history, target)
    if final:
        final["suboptimality_estimate"] = suboptimality_estimate(final["grad_norm"], final["loss"], cfg)
        converged, criterion = is_converged(final, cfg)
        if converged and not_converged:
            converged, criterion = False, f"{criterion}, but {'; '.join(not_converged)}"
    gap, rel_gap = gaps(final, target.predicted if target.applies else {})
    return {
        "status": status,
        "config": cfg.to_dict(),
        "final": final,
        "final_step": finite_rows[-1]["step"] if finite_rows else None,
        "theory": target.to_dict(),
        "gap": gap,
        "rel_gap": rel_gap,
        "steps": steps,
        "seconds": seconds,
        "converged": bool(status == "ok" and converged),
        "converged_criterion": criterion,
        "divergence": divergence,
        "device": device,
        "doubts": not_converged,
    }
