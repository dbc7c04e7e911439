"""The minority-collapse report of an imbalanced run (Fang, He, Long & Su 2021; DESIGN §5.2).

Every run whose classes do not all have the same count gets it, from `--imbalance R --minority K_B`
(the last K_B classes get n/R samples) or from `--counts` (the count groups read from the counts:
the minority is the group of the smallest count, K_B its size). The report holds, per count group,
the run's mean pairwise cosine between the group's classifiers and their norm relative to the
largest-count group's; whether the UFM's global optimum has that group's classifiers identical (closed
form, `analysis.theory.group_collapse_threshold`); and, for the minority, three predictions: the UFM's own
global optimum (the certified convex program) with the ratio from which its minority classifiers are
parallel, in closed form (`minority_parallel_ratio`, two count groups) and by bisection on the
certificate (cosine >= 0.999); and the layer-peeled model (LPM) with norm budgets set to the run's end
point — E_W = (1/K)Σ‖w_k‖², E_H = (1/K)Σ_k mean_{i∈k}‖x_i‖² — with the ratio at which the LPM's minority
classifiers become parallel for those budgets. The LPM bounds the features per class (each class counts
equally) where weight decay bounds them per sample, so the two models differ once the classes are
imbalanced.
"""

from __future__ import annotations

import torch

from ufm.config import SimConfig
from ufm.model import final_state
from ufm.output.format import fmt

NAME, ORDER = "minority", 60

# the LPM is a 2K×2K semidefinite program (cvxpy): measured 6 s at K = 30 on 2 cores, minutes beyond
LPM_MAX_K = 30
# the LPM's critical ratio is a bisection over ~40 such SDPs: measured 2.5 s at K = 12 and 240 s at K = 30
LPM_BISECT_MAX_K = 12


def _count_groups(cfg: SimConfig) -> tuple[list[int], list[int], float, float]:
    """(majority, minority, n_A, n_B): with --imbalance the last --minority classes are the minority (so
    R = 1 keeps its K_B); otherwise the classes of the smallest count are; n_A is the largest count."""
    counts = cfg.class_counts
    if cfg.imbalance is not None:
        minority = list(range(cfg.K - cfg.minority, cfg.K))
    else:
        minority = [k for k in range(cfg.K) if counts[k] == min(counts)]
    majority = [k for k in range(cfg.K) if k not in set(minority)]
    return majority, minority, max(counts), counts[minority[0]]


def _margin(cfg: SimConfig) -> float | None:
    """q_own − q_other of the loss's targets (the collapse threshold's scale), None where not applicable."""
    return {"ce": 1.0, "ls": 1 - cfg.loss.smoothing, "mse": cfg.loss.target_scale}.get(cfg.loss.name)


def minority_summary(params: dict[str, torch.Tensor], y: torch.Tensor, cfg: SimConfig, convex=None,
                     with_critical_ratio: bool = True) -> dict:
    """The `minority` block (module docstring); `convex`: the certified optimum, or None."""
    from analysis.convex import critical_ratios, layer_peeled_model, mean_pairwise_cosine, ufm_critical_ratio
    from analysis.theory import group_collapse_threshold, minority_parallel_ratio

    majority, minority, n_A, n_B = _count_groups(cfg)
    K_A, K_B = len(majority), len(minority)
    with torch.no_grad():
        p, X = final_state(params, cfg)
        W = p["W"]
        G = (W @ W.T).cpu().numpy()
        norms = torch.linalg.norm(W, dim=1)
        class_sq = torch.zeros(cfg.K, dtype=torch.float64, device=X.device).index_add_(0, y, (X * X).sum(1))
        counts = torch.bincount(y, minlength=cfg.K).double()
    out = {"ratio": n_A / n_B, "requested_ratio": None if cfg.imbalance is None else float(cfg.imbalance),
           "K_A": K_A, "K_B": K_B, "counts": list(cfg.class_counts),
           "cosine": mean_pairwise_cosine(G, minority),
           "norm_ratio": float(norms[minority].mean() / norms[majority].mean()) if majority else 1.0}
    ok_theory = cfg.depth == 1 and min(cfg.wd_W, cfg.wd_H) > 0 and _margin(cfg) is not None
    collapsed = group_collapse_threshold(cfg.class_counts, cfg.wd_W, cfg.wd_H, _margin(cfg)) if ok_theory else {}
    out["groups"], top = [], None
    for c in sorted(set(cfg.class_counts), reverse=True):  # the largest count first: the norms' reference
        members = [k for k in range(cfg.K) if cfg.class_counts[k] == c]
        top = norms[members].mean() if top is None else top
        out["groups"].append({"count": c, "classes": len(members), "cosine": mean_pairwise_cosine(G, members),
                              "norm_ratio": float(norms[members].mean() / top),
                              "identical_at_optimum": collapsed.get(c)})
    if K_B < 2:
        out["skipped"] = "one minority class: no pairwise cosine"
        return out
    if convex is not None and cfg.d >= convex.rank:
        out["ufm_optimum_cosine"] = mean_pairwise_cosine(convex.grams["W"], minority)
    elif convex is not None:
        out["skipped"] = f"d = {cfg.d} < rank {convex.rank} of the convex optimum: no UFM prediction"
    two_groups = cfg.imbalance is not None or len(set(cfg.class_counts)) == 2
    if ok_theory and two_groups:
        out["ufm_parallel_ratio_closed_form"] = minority_parallel_ratio(K_A, K_B, n_A, cfg.wd_W, cfg.wd_H,
                                                                         _margin(cfg))
    if cfg.loss.name != "ce" or not cfg.certificate or cfg.depth > 1 or not two_groups:
        out.setdefault("skipped", "the bisection and the LPM need --loss ce, depth 1, two count groups and the "
                                  "certificate")
        return out
    try:
        if with_critical_ratio and "ufm_optimum_cosine" in out:
            out["ufm_parallel_ratio"] = ufm_critical_ratio(K_A, K_B, n_A, cfg.wd_W, cfg.wd_H, wd_b=cfg.wd_b,
                                                           bias=cfg.bias)
        if cfg.K > LPM_MAX_K:
            out["skipped"] = f"K = {cfg.K} > {LPM_MAX_K}: the layer-peeled model's 2K×2K SDP is not solved"
            return out
        E_W = float((norms**2).mean())
        E_H = float((class_sq / counts).mean())
        if min(E_W, E_H) < 1e-10:
            out["skipped"] = "W and H collapsed to 0: no LPM with these budgets"
            return out
        lpm = layer_peeled_model(cfg.class_counts, E_W, E_H)
        out.update(lpm_E_W=E_W, lpm_E_H=E_H, lpm_cosine=mean_pairwise_cosine(lpm.gram_classifiers, minority))
        if with_critical_ratio and cfg.K <= LPM_BISECT_MAX_K:
            out["lpm_parallel_ratio"] = critical_ratios(K_A, K_B, E_W, E_H)["parallel"]
        elif with_critical_ratio:
            out["lpm_note"] = (f"K = {cfg.K} > {LPM_BISECT_MAX_K}: the LPM's critical ratio (a bisection over ~40 "
                               "SDPs, minutes) is not computed")
    except (RuntimeError, ValueError) as e:  # a solver failure must not cost the run its summary
        out["skipped"] = f"solver failed: {e}"
    return out


def is_imbalanced(cfg: SimConfig) -> bool:
    """The runs that get a minority report: --imbalance, or class counts that are not all equal.
    >>> is_imbalanced(SimConfig(counts=(5, 5, 2))), is_imbalanced(SimConfig(K=3, n=5))
    (True, False)
    """
    return cfg.imbalance is not None or not cfg.balanced


def applies(run) -> bool:
    return is_imbalanced(run.cfg) and run.measured


def compute(run) -> dict:
    return minority_summary(run.params, run.y, run.cfg, run.certified_convex)


def lines(m: dict) -> list[str]:
    lines = [f"minority collapse (R = {m['ratio']:g}, K_A = {m['K_A']}, K_B = {m['K_B']}): mean cosine between "
             f"minority classifiers {fmt(m['cosine'])}, minority/majority norm {fmt(m['norm_ratio'])}"]
    if len(m.get("groups", [])) > 2:
        lines.append("  per count group (count × classes: cosine, norm / largest group's): " + "; ".join(
            f"{g['count']} × {g['classes']}: {fmt(g['cosine'])}, {fmt(g['norm_ratio'])}" for g in m["groups"]))
    if "ufm_optimum_cosine" in m:
        par = (f"; parallel (cosine >= 0.999) from R = {fmt(m['ufm_parallel_ratio'])}"
               if "ufm_parallel_ratio" in m else "")
        lines.append(f"  UFM global optimum (convex certificate): cosine {fmt(m['ufm_optimum_cosine'])}{par}")
    if "ufm_parallel_ratio_closed_form" in m:
        lines.append(f"  closed form: the optimum's minority classifiers coincide from R = "
                     f"{fmt(m['ufm_parallel_ratio_closed_form'])} (√n_B <= N·sqrt(wd_W·wd_H)/margin)")
    if "lpm_cosine" in m:
        par = (f"; parallel (cosine >= 0.999) from R = {fmt(m['lpm_parallel_ratio'])}" if "lpm_parallel_ratio" in m
               else f" ({m['lpm_note']})" if "lpm_note" in m else "")
        lines.append(f"  layer-peeled model with the run's budgets E_W = {m['lpm_E_W']:.4g}, E_H = {m['lpm_E_H']:.4g}: "
                     f"cosine {fmt(m['lpm_cosine'])}{par}")
    return lines
