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


# the relative gap on the objective under which the run counts as at the predicted optimum (float32 runs end
# ~1e-6 off; the closed forms are exact); where the target predicts no objective, the largest gap it predicts
VERDICT_RTOL = 1e-3


def reached(rel_gap: dict[str, float], converged: bool) -> bool:
    """Whether the run counts as at the target: converged, with the relative gap on the objective (where the
    target predicts none, the largest gap) at most VERDICT_RTOL. Example:
    >>> reached({"loss": 2e-7, "nc1": 0.3}, True), reached({"loss": 0.277}, True), reached({"nc2": 1e-10}, True)
    (True, False, True)
    """
    if not rel_gap:
        return False
    key = "loss" if "loss" in rel_gap else max(rel_gap, key=lambda k: rel_gap[k])
    return bool(converged and rel_gap[key] <= VERDICT_RTOL)


# a class whose classifier row times its mean feature (the classifier's input) is at most this fraction of the
# largest class's has been dropped: its logits are 0 (bias-free) whatever its samples
DROPPED_RTOL = 1e-6


def dropped_classes(params: dict, y, cfg: SimConfig) -> list[int]:
    """The classes the run dropped: ‖w_k‖·‖μ_k‖ <= DROPPED_RTOL × the largest, with μ_k the (uncentered) mean of
    class k at the classifier's input. Empty on the sphere (normalize: the rows are normalized away). Example:
    >>> import torch
    >>> p = {"H": torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]), "W": torch.tensor([[1.0, 0.0], [0.0, 1.0],
    ...      [0.0, 1e-9]])}
    >>> dropped_classes(p, torch.tensor([0, 1, 2]), SimConfig(K=3, n=1, d=2))
    [2]
    """
    import torch

    from ufm.model import layer_inputs

    if cfg.normalize != "none":
        return []
    with torch.no_grad():  # in the run's dtype, no float64 copy of the features (N × d at scale)
        X = layer_inputs(params, cfg.act, nonneg=cfg.features == "nonneg")[-1]
        W = params["W"]
        K = W.shape[0]
        y = torch.as_tensor(y, device=X.device)
        sums = torch.zeros(K, X.shape[1], dtype=X.dtype, device=X.device).index_add_(0, y, X)
        counts = torch.bincount(y, minlength=K).double().clamp_min(1)
        signal = W.double().norm(dim=1) * sums.double().norm(dim=1) / counts
    if not bool(torch.isfinite(signal).all()) or float(signal.max()) <= 0:
        return []
    return [int(k) for k in (signal <= DROPPED_RTOL * signal.max()).nonzero()[:, 0]]


def gap_doubt(gap: dict[str, float], rel_gap: dict[str, float], grad_ok: bool, criterion: str,
              dropped: list[int], saddle: bool, name: str) -> str:
    """Why the run is not at the target (`reached` is False): how far it ended, and the reason where one can be
    told — stopped before converging (`grad_ok` False: the convergence criterion not met), a class dropped, the
    saddle at the origin, else a stationary point that is not the optimum; below the target, that the target
    is not this problem's optimum. Example:
    >>> gap_doubt({"loss": 0.0154}, {"loss": 0.277}, True, "", [3], False, "deep_linear_mse")
    'ended 27.7 % above the optimum: a local minimum or saddle, not the optimum (class 3 dropped)'
    """
    lost = (f"class{'es' if len(dropped) > 1 else ''} {', '.join(map(str, dropped))} dropped" if dropped else "")
    stopped = f"stopped before converging ({criterion} not met)"
    key = "loss" if "loss" in rel_gap else max(rel_gap, key=lambda k: rel_gap[k])
    size = rel_gap[key]
    if size <= VERDICT_RTOL:  # at the target's values, but the run has not converged
        return f"within {size:.1e} (relative) of {name}'s {'objective' if key == 'loss' else key}, but {stopped}"
    if key == "loss":
        direction = "above" if gap["loss"] > 0 else "below"
        where = f"ended {100 * size:.3g} % {direction} the optimum"
        if direction == "below":
            return (f"ended {100 * size:.3g} % below the predicted optimum {name}: {name} is not this problem's "
                    "optimum (the run found a better point)")
    else:
        where = f"{key} ended {size:.3g} (relative) from {name}'s prediction ({name} predicts no objective)"
    if not grad_ok:
        return f"{where}: {stopped}{'; ' + lost if lost else ''}"
    if saddle:
        return f"{where}: at the saddle W = H = 0"
    return f"{where}: a local minimum or saddle, not the optimum{f' ({lost})' if lost else ''}"


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
                  seconds: float, device: str, divergence: dict | None, saddle: str | None = None,
                  dropped: list[int] | None = None) -> dict:
    """summary.json's core. `saddle`: the sentence of ufm.fit.saddle.origin_saddle when the run sits at the saddle
    W = H = 0; with it, or with any of `doubts`, a small gradient is not reported as convergence. A run that is not
    at its target (`reached`) gets a doubt saying how far it ended and why (`gap_doubt`; `dropped`: the classes
    `dropped_classes` found); only a run below the target keeps a convergence its gradient shows."""
    finite_rows = [r for r in history if math.isfinite(r["loss"])]
    final = dict(finite_rows[-1]) if finite_rows else {}
    final.pop("step", None), final.pop("seconds", None)
    converged, criterion = False, "no finite measurement"
    not_converged = ([saddle] if saddle else []) + doubts(final, history, target)
    gap, rel_gap = gaps(final, target.predicted if target.applies else {})
    if final:
        final["suboptimality_estimate"] = suboptimality_estimate(final["grad_norm"], final["loss"], cfg)
        converged, criterion = is_converged(final, cfg)
        grad_ok, grad_criterion = converged, criterion
        if converged and not_converged:
            converged, criterion = False, f"{criterion}, but {'; '.join(not_converged)}"
        if status == "ok" and rel_gap and not reached(rel_gap, converged):
            why = gap_doubt(gap, rel_gap, grad_ok, grad_criterion, dropped or [], bool(saddle), target.name)
            not_converged.insert(0, why)
            below = gap.get("loss", 0.0) < 0 and rel_gap["loss"] > VERDICT_RTOL  # the target is not the optimum
            if converged and not below:
                converged, criterion = False, f"{criterion}, but {why}"
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
