"""The minority-collapse report of an imbalanced run (Fang, He, Long & Su 2021; DESIGN §5.2).

Every run whose classes do not all have the same count gets it, from `--imbalance R --minority K_B`
(the last K_B classes get n/R samples) or from `--counts` / `--counts-file` (the count groups read from the
counts: the minority is the group of the smallest count, K_B its size). The report holds, per count group,
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

**Minority collapse at scale** (`collapse`): how many classes, and which, collapse according to the theory,
and how many (and which) did in the run, as counts of classes and half-open ranges [start, stop) of class
indices (a Zipf vocabulary's collapsed tail is one range).
- Theory. Bias-free MSE: the closed form, class k vanishes (w_k = 0, so a group's classes coincide) iff
  s·√n_k <= N·√(λ_Wλ_H) (`analysis.theory.mse_bias_free`; a class alone in its count group included). CE, LS
  and MSE with a bias: the certified count-group program, one group per distinct count: group g collapses
  iff its within-group singular value d_g is 0 (below 1e-8 of the largest singular value); cross-checked
  against `group_collapse_threshold` (margin·√n_g <= N·√(λ_Wλ_H)), the two must agree. Without a certified
  program, the closed-form threshold alone.
- Run. Class k of a count group of at least two classes collapsed in the run when its classifier row lies
  within COLLAPSE_RTOL × the RMS row norm of W, ‖W‖_F/√K, of its group's mean row; under bias-free MSE a
  row that has vanished (‖w_k‖ <= COLLAPSE_RTOL × the RMS row norm) also counts, alone in its group or not.

Cost: O(K·d) with vectorized group sums (no K×K matrix, no loop over the classes), so it runs at K = 10⁵.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from analysis.theory import GRAMS_MAX_K
from ufm.config import SimConfig
from ufm.model import final_state
from ufm.output.format import fmt

NAME, ORDER = "minority", 60

# the LPM is a 2K×2K semidefinite program (cvxpy): measured 6 s at K = 30 on 2 cores, minutes beyond
LPM_MAX_K = 30
# the LPM's critical ratio is a bisection over ~40 such SDPs: measured 2.5 s at K = 12 and 240 s at K = 30
LPM_BISECT_MAX_K = 12
# a row within this fraction of the RMS row norm of W from its group's mean row counts as collapsed in the run
COLLAPSE_RTOL = 1e-3
# the table prints this many count groups (the summary has them all)
TABLE_GROUPS = 8
# a cosine means nothing once a vector has vanished (as analysis.convex.mean_pairwise_cosine): below this
# fraction of the largest row norm, or below VANISHED_ABS in absolute terms
VANISHED_RTOL, VANISHED_ABS = 1e-4, 1e-6


def _count_groups(cfg: SimConfig) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(majority, minority, n_A, n_B) class indices: with --imbalance the last --minority classes are the minority
    (so R = 1 keeps its K_B); otherwise the classes of the smallest count are; n_A is the largest count."""
    counts = np.asarray(cfg.class_counts)
    if cfg.imbalance is not None:
        is_minority = np.arange(cfg.K) >= cfg.K - cfg.minority
    else:
        is_minority = counts == counts.min()
    minority = np.flatnonzero(is_minority)
    return np.flatnonzero(~is_minority), minority, float(counts.max()), float(counts[minority[0]])


def _margin(cfg: SimConfig) -> float | None:
    """q_own − q_other of the loss's targets (the collapse threshold's scale), None where not applicable."""
    return {"ce": 1.0, "ls": 1 - cfg.loss.smoothing, "mse": cfg.loss.target_scale}.get(cfg.loss.name)


def index_ranges(mask: np.ndarray) -> list[list[int]]:
    """The runs of True in a boolean vector as half-open ranges [start, stop) of indices.
    >>> index_ranges(np.array([False, True, True, False, True]))
    [[1, 3], [4, 5]]
    """
    edges = np.diff(np.concatenate([[0], np.asarray(mask, dtype=np.int8), [0]]))
    return [[int(a), int(b)] for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)]


def mean_cosine(W: torch.Tensor, index: torch.Tensor) -> float:
    """Mean pairwise cosine of the rows `index` of W: `group_statistics` with those rows one group and the rest
    another (the vanishing test relative to every row of W); NaN for fewer than two rows or once one has vanished.
    >>> W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]], dtype=torch.float64)
    >>> round(mean_cosine(W, torch.arange(3)), 12)   # cosines 0, −1, 0
    -0.333333333333
    """
    group = torch.zeros(len(W), dtype=torch.int64, device=W.device)
    group[index] = 1
    return float(group_statistics(W, group, 2)["cosine"][1])


def group_statistics(W: torch.Tensor, class_group: torch.Tensor, G: int) -> dict[str, torch.Tensor]:
    """Per count group g of the rows of W (class k in group class_group[k]): "size" m_g, "mean_norm", "cosine" (mean
    pairwise cosine, `mean_cosine`), and per class "norm" and "deviation" ‖w_k − w̄_g‖ from its group's mean row —
    group sums by index_add, no loop over the classes.
    >>> W = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    >>> s = group_statistics(W, torch.tensor([0, 0, 1]), 2)
    >>> s["cosine"].tolist()[0], s["deviation"].tolist(), s["mean_norm"].tolist()
    (1.0, [0.0, 0.0, 0.0], [1.0, 3.0])
    """
    K, d = W.shape
    zeros = torch.zeros(G, dtype=W.dtype, device=W.device)
    size = zeros.index_add(0, class_group, torch.ones(K, dtype=W.dtype, device=W.device))
    norms = torch.linalg.vector_norm(W, dim=1)
    unit = W / norms.clamp_min(torch.finfo(W.dtype).tiny)[:, None]
    sums = torch.zeros(G, d, dtype=W.dtype, device=W.device).index_add_(0, class_group, unit)
    own = zeros.index_add(0, class_group, (unit * unit).sum(1))
    pairs = (size * (size - 1)).clamp_min(1)
    cosine = ((sums * sums).sum(1) - own) / pairs
    low = torch.full_like(zeros, math.inf).scatter_reduce(0, class_group, norms, "amin")
    high = zeros.scatter_reduce(0, class_group, norms, "amax")
    vanished = (low <= VANISHED_RTOL * norms.max()) | (high <= VANISHED_ABS)
    cosine = torch.where((size >= 2) & ~vanished, cosine, torch.full_like(cosine, math.nan))
    mean = torch.zeros(G, d, dtype=W.dtype, device=W.device).index_add_(0, class_group, W) / size[:, None]
    deviation = torch.linalg.vector_norm(W - mean[class_group], dim=1)
    return {"size": size, "mean_norm": zeros.index_add(0, class_group, norms) / size, "cosine": cosine,
            "norm": norms, "deviation": deviation}


def _optimum_cosine(convex, minority: np.ndarray) -> float:
    """The mean pairwise cosine of the minority classifiers at the certified optimum: from its K×K Gram where it
    has one (K <= GRAMS_MAX_K), else from the count-group Gram (the minority lies in one group of the program,
    whose classes have equal cosines; NaN once they vanish, as `mean_cosine`)."""
    from analysis.convex import mean_pairwise_cosine

    if "W" in convex.grams:
        return mean_pairwise_cosine(convex.grams["W"], minority)
    g = int(convex.class_group[minority[0]])
    grams = convex.groups.grams
    if "W" not in grams:
        return math.nan  # rank 0: everything is 0
    own = np.sqrt(np.clip(grams["W"].entries()[0], 0, None))
    if own[g] <= VANISHED_RTOL * own.max() or own[g] <= VANISHED_ABS:
        return math.nan
    return float(grams["W"].group_cosines()[g])


def _theory_collapse(cfg: SimConfig, values: np.ndarray, m: np.ndarray, convex) -> tuple[np.ndarray | None, dict]:
    """(per group: collapsed at the optimum, or None where no theory applies; what it rests on)."""
    from analysis.theory import group_collapse_threshold

    margin = _margin(cfg)
    if cfg.depth > 1 or min(cfg.wd_W, cfg.wd_H) <= 0 or margin is None:
        return None, {"theory_source": None, "theory_reason": "no collapse theory for this loss, depth or weight decay "
                                                               "(bias-free MSE, or CE, LS, MSE at depth 1 with wd_W, "
                                                               "wd_H > 0)"}
    threshold = group_collapse_threshold(cfg.class_counts, cfg.wd_W, cfg.wd_H, margin)
    closed = np.array([threshold.get(int(v) if float(v).is_integer() else float(v), False) for v in values])
    info: dict = {}
    certified = None
    if convex is not None and convex.group_counts is not None:
        by_count = dict(zip(convex.group_counts.tolist(), convex.groups.collapsed.tolist(), strict=True))
        certified = np.array([bool(by_count.get(float(v), False)) for v in values]) & (m >= 2)
    if cfg.loss.name == "mse" and not cfg.bias:
        N, rho = float((values * m).sum()), math.sqrt(cfg.wd_W * cfg.wd_H)
        theory = margin * np.sqrt(values) <= N * rho  # the class vanishes, alone in its group or not
        info["theory_source"] = ("closed form (bias-free MSE): class k vanishes iff s·√n_k <= N·sqrt(wd_W·wd_H) "
                                 "(analysis.theory.mse_bias_free)")
        if certified is not None:
            info["certificate_agrees"] = bool((certified == (theory & (m >= 2))).all())
        return theory, info
    if certified is not None:
        info["theory_source"] = ("certificate: the count-group program, one group per distinct count; a group "
                                 "collapses iff its within-group singular value d_g is 0")
        disagree = (certified != closed) & (m >= 2)
        info["closed_form_agrees"] = bool(not disagree.any())
        info["disagreeing_counts"] = [float(v) for v in values[disagree]]
        if convex.rank > cfg.d:
            info["theory_note"] = (f"d = {cfg.d} < rank {convex.rank}: the program is a convex relaxation of this UFM, "
                                   "not its optimum")
        return certified, info
    info["theory_source"] = ("closed form: a count group collapses iff margin·√n_g <= N·sqrt(wd_W·wd_H) "
                             "(analysis.theory.group_collapse_threshold; no certified program)")
    return closed, info


def minority_summary(params: dict[str, torch.Tensor], y: torch.Tensor, cfg: SimConfig, convex=None,
                     with_critical_ratio: bool = True) -> dict:
    """The `minority` block (module docstring); `convex`: the certified optimum, or None."""
    from analysis.theory import group_collapse_threshold, minority_parallel_ratio

    majority, minority, n_A, n_B = _count_groups(cfg)
    K_A, K_B = len(majority), len(minority)
    counts = np.asarray(cfg.class_counts)
    values, class_group, m = np.unique(counts, return_inverse=True, return_counts=True)
    G = len(values)
    with torch.no_grad():
        p, X = final_state(params, cfg)
        W = p["W"]
        dev = W.device
        cg = torch.as_tensor(class_group, device=dev)
        stats = group_statistics(W, cg, G)
        norms = stats["norm"]
        class_sq = torch.zeros(cfg.K, dtype=torch.float64, device=X.device).index_add_(0, y, (X * X).sum(1))
        sample_counts = torch.bincount(y, minlength=cfg.K).double()
        rms = float(torch.linalg.vector_norm(W)) / math.sqrt(cfg.K)
        in_group = torch.as_tensor(m[class_group] >= 2, device=dev)
        run_collapsed = in_group & (stats["deviation"] <= COLLAPSE_RTOL * rms)
        if cfg.loss.name == "mse" and not cfg.bias:
            run_collapsed |= norms <= COLLAPSE_RTOL * rms
        run_collapsed = run_collapsed.cpu().numpy()
        minority_t, majority_t = (torch.as_tensor(a, device=dev) for a in (minority, majority))
        out = {"ratio": n_A / n_B, "requested_ratio": None if cfg.imbalance is None else float(cfg.imbalance),
               "K_A": K_A, "K_B": K_B, "counts": counts.tolist(),
               "cosine": mean_cosine(W, minority_t),
               "norm_ratio": float(norms[minority_t].mean() / norms[majority_t].mean()) if K_A else 1.0}
        mean_norm, cosine = stats["mean_norm"].cpu().numpy(), stats["cosine"].cpu().numpy()
    theory, info = _theory_collapse(cfg, values, m, convex)
    ok_theory = info["theory_source"] is not None
    identical = (group_collapse_threshold(counts.tolist(), cfg.wd_W, cfg.wd_H, _margin(cfg)) if ok_theory else {})
    per_group_run = np.bincount(class_group, weights=run_collapsed.astype(float), minlength=G)
    out["groups"] = []
    top = mean_norm[-1]  # the largest count: the norms' reference
    for g in range(G - 1, -1, -1):  # the largest count first
        c = values[g].item()
        out["groups"].append({"count": c, "classes": int(m[g]), "cosine": float(cosine[g]),
                              "norm_ratio": float(mean_norm[g] / top), "identical_at_optimum": identical.get(c),
                              "collapsed_at_optimum": None if theory is None else bool(theory[g]),
                              "collapsed_in_run": int(per_group_run[g])})
    vanished = " (bias-free MSE: or whose row has vanished, norm <= rtol × RMS)" if cfg.loss.name == "mse" \
        and not cfg.bias else ""
    collapse: dict = {
        "definition": ("run: a class of a count group of >= 2 classes whose classifier row is within rtol × the RMS "
                       f"row norm of W of its group's mean row{vanished}; theory: see theory_source; ranges are "
                       "half-open [start, stop) of class indices"),
        "rtol": COLLAPSE_RTOL, "rms_row_norm": rms, **info,
        "run_classes": int(run_collapsed.sum()), "run_class_ranges": index_ranges(run_collapsed),
    }
    if theory is not None:
        theory_classes = theory[class_group]
        collapse.update(theory_classes=int(theory_classes.sum()), theory_counts=[v.item() for v in values[theory]],
                        theory_class_ranges=index_ranges(theory_classes),
                        both=int((theory_classes & run_collapsed).sum()),
                        theory_only=int((theory_classes & ~run_collapsed).sum()),
                        run_only=int((~theory_classes & run_collapsed).sum()))
    out["collapse"] = collapse
    if K_B < 2:
        out["skipped"] = "one minority class: no pairwise cosine"
        return out
    if convex is not None and cfg.d >= convex.rank:
        out["ufm_optimum_cosine"] = _optimum_cosine(convex, minority)
    elif convex is not None:
        out["skipped"] = f"d = {cfg.d} < rank {convex.rank} of the convex optimum: no UFM prediction"
    two_groups = cfg.imbalance is not None or G == 2
    if ok_theory and two_groups:
        out["ufm_parallel_ratio_closed_form"] = minority_parallel_ratio(K_A, K_B, n_A, cfg.wd_W, cfg.wd_H,
                                                                         _margin(cfg))
    if cfg.loss.name != "ce" or not cfg.certificate or cfg.depth > 1 or not two_groups:
        out.setdefault("skipped", "the bisection and the LPM need --loss ce, depth 1, two count groups and the "
                                  "certificate")
        return out
    from analysis.convex import critical_ratios, layer_peeled_model, mean_pairwise_cosine, ufm_critical_ratio

    try:
        if with_critical_ratio and "ufm_optimum_cosine" in out:
            if cfg.K <= GRAMS_MAX_K:
                out["ufm_parallel_ratio"] = ufm_critical_ratio(K_A, K_B, n_A, cfg.wd_W, cfg.wd_H, wd_b=cfg.wd_b,
                                                               bias=cfg.bias)
            else:
                out["ufm_parallel_note"] = (f"K = {cfg.K} > {GRAMS_MAX_K}: the bisection on the certificate reads K×K "
                                            "Grams and is not run (the closed form above is exact)")
        if cfg.K > LPM_MAX_K:
            out["skipped"] = f"K = {cfg.K} > {LPM_MAX_K}: the layer-peeled model's 2K×2K SDP is not solved"
            return out
        E_W = float((norms**2).mean())
        E_H = float((class_sq / sample_counts).mean())
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


def _ranges(ranges: list[list[int]], limit: int = 4) -> str:
    """'0–9, 12–13' (inclusive, for reading) of half-open ranges; the first `limit`."""
    text = ", ".join(f"{a}" if b == a + 1 else f"{a}–{b - 1}" for a, b in ranges[:limit])
    return text + (f", … ({len(ranges) - limit} more ranges)" if len(ranges) > limit else "")


def lines(m: dict) -> list[str]:
    lines = [f"minority collapse (R = {m['ratio']:g}, K_A = {m['K_A']}, K_B = {m['K_B']}): mean cosine between "
             f"minority classifiers {fmt(m['cosine'])}, minority/majority norm {fmt(m['norm_ratio'])}"]
    groups = m.get("groups", [])
    if len(groups) > 2:
        shown = "; ".join(f"{g['count']} × {g['classes']}: {fmt(g['cosine'])}, {fmt(g['norm_ratio'])}"
                          for g in groups[:TABLE_GROUPS])
        more = f"; … {len(groups) - TABLE_GROUPS} more in summary.json" if len(groups) > TABLE_GROUPS else ""
        lines.append(f"  per count group (count × classes: cosine, norm / largest group's; {len(groups)} groups): "
                     f"{shown}{more}")
    c = m.get("collapse")
    if c and "theory_classes" in c:
        K = len(m.get("counts", [])) or "K"
        agree = ("" if "closed_form_agrees" not in c else
                 "; the closed-form threshold agrees" if c["closed_form_agrees"] else
                 f"; the closed-form threshold DISAGREES on counts {c['disagreeing_counts']}")
        theory_ranges = f" (classes {_ranges(c['theory_class_ranges'])})" if c["theory_classes"] else ""
        run_ranges = f" (classes {_ranges(c['run_class_ranges'])})" if c["run_classes"] else ""
        note = f"; {c['theory_note']}" if "theory_note" in c else ""
        lines.append(f"  collapsed classes: theory {c['theory_classes']} of {K}{theory_ranges}, run "
                     f"{c['run_classes']}{run_ranges}; both {c['both']}, theory only {c['theory_only']}, run only "
                     f"{c['run_only']} (rtol {c['rtol']:g} of the RMS row norm){agree}{note}")
    elif c:
        lines.append(f"  collapsed classes in the run: {c['run_classes']} (no theory: {c.get('theory_reason', '')})")
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
