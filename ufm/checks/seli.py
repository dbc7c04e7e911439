"""SELI (Thrampoulidis et al. 2022): the λ → 0 geometry of the bias-free UFM under imbalanced CE, against the
run's end point and the certified optimum at the run's λ.

Up to K = GRAMS_MAX_K the K×K Grams are built; beyond it everything is computed in the count-group algebra
(`analysis.theory.seli_group_grams`, `gram_distance_grouped`, the certificate's `GroupMatrix` Grams): O(K·d + d²·K)
for the run, O(G³) for the references, no K×K matrix."""

from __future__ import annotations

import torch

from ufm.checks.minority import is_imbalanced
from ufm.config import SimConfig
from ufm.model import final_state
from ufm.output.format import fmt

NAME, ORDER = "seli", 70


def applies(run) -> bool:
    return is_imbalanced(run.cfg) and run.cfg.loss.name == "ce" and run.measured


def compute(run) -> dict:
    return seli_summary(run.params, run.y, run.cfg, run.certified_convex)


def seli_summary(params: dict[str, torch.Tensor], y: torch.Tensor, cfg: SimConfig, convex=None) -> dict:
    """The `seli` block of an imbalanced CE run: normalized Gram distances ‖G/‖G‖ − G*/‖G*‖‖_F of W and of
    the (uncentered) class means to the SELI geometry (Thrampoulidis et al. 2022), the λ → 0 limit of the
    bias-free UFM, for the run and for the certified optimum at this λ (how far finite weight decay sits
    from the limit). `convex`: the certified optimum, or None."""
    from analysis.metrics import class_means, gram_distance
    from analysis.theory import GRAMS_MAX_K, seli_grams

    if cfg.K > GRAMS_MAX_K:
        return _seli_grouped(params, y, cfg, convex)
    ref = seli_grams(cfg.class_counts)
    with torch.no_grad():
        p, X = final_state(params, cfg)
        means = class_means(X, y, cfg.K)
        measured = {"W": p["W"] @ p["W"].T, "means": means @ means.T}
    out = {"reference": "SELI: WWᵀ ∝ (PDP)^{1/2}, class-mean Gram ∝ (PDP)^{+1/2}, P = I − 11ᵀ/K, D = diag(n)",
           "applies_to": "the bias-free UFM as weight decay → 0" + ("" if not cfg.bias else
                                                                    " (this run has a bias: a reference only)")}
    for key, G in measured.items():
        out[f"{key}_distance"] = gram_distance(G, ref[key])
    if convex is not None:
        F = convex.features
        out["optimum_W_distance"] = gram_distance(convex.grams["W"], ref["W"])
        out["optimum_means_distance"] = gram_distance(F @ F.T, ref["means"])
    return out


def _seli_grouped(params: dict[str, torch.Tensor], y: torch.Tensor, cfg: SimConfig, convex=None) -> dict:
    """`seli_summary` for K > GRAMS_MAX_K: the same distances without any K×K matrix."""
    from analysis.metrics import class_means
    from analysis.theory import GRAMS_MAX_K, class_groups, gram_distance_grouped, seli_group_grams

    ref = seli_group_grams(cfg.class_counts)
    _, _, class_group = class_groups(cfg.class_counts)
    with torch.no_grad():
        p, X = final_state(params, cfg)
        rows = {"W": p["W"].cpu().numpy(), "means": class_means(X, y, cfg.K).cpu().numpy()}
    out = {"reference": "SELI: WWᵀ ∝ (PDP)^{1/2}, class-mean Gram ∝ (PDP)^{+1/2}, P = I − 11ᵀ/K, D = diag(n)",
           "applies_to": "the bias-free UFM as weight decay → 0" + ("" if not cfg.bias else
                                                                    " (this run has a bias: a reference only)"),
           "computed": f"K = {cfg.K} > {GRAMS_MAX_K}: on the count groups, without K×K Grams (the run's distances to "
                       "~1e-8 absolute)"}
    for key, V in rows.items():
        out[f"{key}_distance"] = gram_distance_grouped(V, ref[key], class_group)
    if convex is not None and "W" in convex.groups.grams:
        grams = convex.groups.grams
        out["optimum_W_distance"] = grams["W"].distance(ref["W"])
        out["optimum_means_distance"] = grams["features"].distance(ref["means"])
    return out


def lines(q: dict) -> list[str]:
    opt = (f" (the certified optimum at this λ: {fmt(q['optimum_W_distance'])}, "
           f"{fmt(q['optimum_means_distance'])})" if "optimum_W_distance" in q else "")
    return [f"SELI (the λ → 0 geometry of imbalanced CE): normalized Gram distance of W "
            f"{fmt(q['W_distance'])}, of the class means {fmt(q['means_distance'])}{opt}"]
