"""The end-of-run table: quantity · measured · predicted · gap."""

from __future__ import annotations

import math

from ufm.output.summary import ZERO_PREDICTION

# rows always shown (when measured), then whatever else the theory predicts
_ROWS = ("loss", "W_norm_sq", "H_norm_sq", "nc1", "nc2", "nc3", "nc4", "accuracy")


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.6g}" if x == 0 or 1e-3 <= abs(x) < 1e6 else f"{x:.3e}"


def format_table(summary: dict) -> str:
    final, theory = summary["final"], summary["theory"]
    predicted = theory["predicted"] if theory["applies"] else {}
    keys = [k for k in _ROWS if k in final] + [k for k in predicted if k not in _ROWS and k in final]
    lines = [f"{'quantity':<14}  {'measured':>12}  {'predicted':>12}  {'gap':>14}"]
    for k in keys:
        gap = summary["rel_gap"].get(k)
        kind = "" if gap is None else (" rel" if abs(predicted[k]) > ZERO_PREDICTION else " abs")
        lines.append(f"{k:<14}  {_fmt(final[k]):>12}  {_fmt(predicted.get(k)):>12}  {_fmt(gap) + kind:>14}")
    head = f"theory: {theory['name']}" + ("" if theory["applies"] else f" does not apply: {theory['reason']}")
    if theory["applies"] and theory["reason"]:
        head += f" ({theory['reason']})"
    if summary.get("grams"):
        label = {"W": "WWᵀ", "means": "MMᵀ (centered means)", "means_cos": "cosines of the class means"}
        errs = ", ".join(f"{label[k]} {v['rel_error']:.2e}" for k, v in summary["grams"].items())
        lines.append(f"Gram matrices, relative Frobenius error to the predicted ones: {errs}")
    cert = summary.get("certificate", {})
    if cert.get("applies"):
        lines.extend(_certificate_lines(cert))
    elif cert:
        lines.append(f"certificate: skipped ({cert.get('reason', 'no finite measurement')})")
    if summary.get("hierarchy"):
        lines.extend(_hierarchy_lines(summary["hierarchy"]))
    if summary.get("gnc"):
        lines.extend(_gnc_lines(summary["gnc"]))
    if summary.get("sqi"):
        lines.extend(_sqi_lines(summary["sqi"]))
    if summary.get("minority"):
        lines.extend(_minority_lines(summary["minority"]))
    if summary.get("seli"):
        q = summary["seli"]
        opt = (f" (the certified optimum at this λ: {_fmt(q['optimum_W_distance'])}, "
               f"{_fmt(q['optimum_means_distance'])})" if "optimum_W_distance" in q else "")
        lines.append(f"SELI (the λ → 0 geometry of imbalanced CE): normalized Gram distance of W "
                     f"{_fmt(q['W_distance'])}, of the class means {_fmt(q['means_distance'])}{opt}")
    if summary.get("milestones"):
        m = summary["milestones"]
        step = lambda v: f"step {v}" if v is not None else "never"  # noqa: E731
        lines.append(f"interpolates (training loss → 0): {step(m['interpolation_step'])}; NC1 <= 1e-3: "
                     f"{step(m['nc1_reached_step'])}")
    cfg = summary["config"]
    K = cfg["K"]
    d = cfg["width"] if cfg.get("depth", 1) > 1 else cfg["d"]  # the classifier's input dimension
    if K > d + 1:
        lines.append(f"note: no simplex ETF exists for K = {K} > d + 1 = {d + 1}: NC2 and NC3 are not reported "
                     "(see the GNC line)")
    conv = "converged" if summary["converged"] else "not converged"
    tail = (f"{summary['steps']} steps in {summary['seconds']:.1f} s, {conv} "
            f"[{summary['converged_criterion']}; grad_norm {final.get('grad_norm', math.nan):.2e}]")
    return "\n".join([head, *lines, tail])


def _certificate_lines(c: dict) -> list[str]:
    verdict = (f"certified (relative gap {c['certificate_rel_gap']:.1e} <= {c['rtol']:g})" if c["certified"] else
               f"NOT certified (relative gap {c['certificate_rel_gap']:.1e} > {c['rtol']:g})")
    bound = "; a lower bound on this UFM's optimum: d < rank" if c["lower_bound_only"] else ""
    lines = [f"certificate: {verdict}: global optimum F* in [{c['lower']:.15g}, {c['upper']:.15g}] "
             f"({c['solver']}, {c['iterations']} iterations, {c['solver_seconds']:.2f} s{bound})"]
    if "gap" in c:
        lines.append(f"  objective − lower bound = {c['gap']:.3e} (relative {c['rel_gap']:.2e})")
    return lines


def _hierarchy_lines(h: dict) -> list[str]:
    m, f = h["measured"], h["frame"]
    dists = ", ".join(f"@{k.split('@')[1]} {_fmt(v)}" for k, v in m.items() if k.startswith("hier_dist@"))
    lines = [f"hierarchy {h['tree']} ({h['K']} classes, height {h['height']}): mistake severity "
             f"{_fmt(m.get('mistake_severity'))}, HierDist {dists}"]
    if "angular_mean" in m:
        W = (f"; classifier {_fmt(m['angular_mean_W'])} ± {_fmt(m['angular_std_W'])}"
             if "angular_mean_W" in m else "")
        lines.append(f"angular collapse |cos − S| to the HAFrame Gram S (γ = {f['gamma']:g}, s_min = "
                     f"{f['s_min']:.4g}): class means {_fmt(m['angular_mean'])} ± {_fmt(m['angular_std'])}{W}; "
                     f"hierarchy-aware NC2 {_fmt(m.get('hier_nc2'))}")
    if "nc1_collapsed" in h:
        lines.append(f"NC1 → 0: {'yes' if h['nc1_collapsed'] else 'no'} (NC1 = {_fmt(h['nc1'])})")
    return lines


def _gnc_lines(g: dict) -> list[str]:
    t = g["target"]
    target = "the simplex ETF" if t["kind"] == "simplex_etf" else f"the {t['kind'].replace('_', ' ')}"
    parts = []
    for who, label in (("W", "classifier/proxies"), ("means", "class means")):
        if f"energy_{who}" in g:
            parts.append(f"{label}: energy {g[f'energy_{who}']:.10g} (rel. gap {g[f'energy_rel_gap_{who}']:.2e}), "
                         f"min angle {g[f'min_angle_{who}']:.4f}° (gap {g[f'angle_gap_{who}_deg']:.2e}°)")
    head = (f"GNC against {target} (Riesz s = {t['s']:g} energy {t['energy']:.10g}, min angle "
            f"{t['min_angle_deg']:.4f}°):")
    return [head, *("  " + p for p in parts)]


def _sqi_lines(q: dict) -> list[str]:
    lines = [q["verdict"]]
    if "identity_rel_error" in q:
        lines.append(f"stationarity identity ‖w_c‖² = (1/(λN)) Σ_i (y_i − f_i)_c (f_i − b)_c: max relative error "
                     f"{q['identity_rel_error']:.2e}")
    if q["is_sqi"]:
        lines.append(f"SQI closed forms at ε = {q['epsilon']:.6g}: ‖w_c‖² = {q['sqi_W_row_norm_sq']:.6g} (max relative "
                     f"error {q['sqi_norm_rel_error']:.2e}); w_c ∥ μ_c − μ_G (min cosine "
                     f"{q['sqi_direction_cosine_min']:.8f}, relative error of W {q['sqi_W_rel_error']:.2e})")
    return lines


def _minority_lines(m: dict) -> list[str]:
    lines = [f"minority collapse (R = {m['ratio']:g}, K_A = {m['K_A']}, K_B = {m['K_B']}): mean cosine between "
             f"minority classifiers {_fmt(m['cosine'])}, minority/majority norm {_fmt(m['norm_ratio'])}"]
    if len(m.get("groups", [])) > 2:
        lines.append("  per count group (count × classes: cosine, norm / largest group's): " + "; ".join(
            f"{g['count']} × {g['classes']}: {_fmt(g['cosine'])}, {_fmt(g['norm_ratio'])}" for g in m["groups"]))
    if "ufm_optimum_cosine" in m:
        par = (f"; parallel (cosine >= 0.999) from R = {_fmt(m['ufm_parallel_ratio'])}"
               if "ufm_parallel_ratio" in m else "")
        lines.append(f"  UFM global optimum (convex certificate): cosine {_fmt(m['ufm_optimum_cosine'])}{par}")
    if "ufm_parallel_ratio_closed_form" in m:
        lines.append(f"  closed form: the optimum's minority classifiers coincide from R = "
                     f"{_fmt(m['ufm_parallel_ratio_closed_form'])} (√n_B <= N·sqrt(wd_W·wd_H)/margin)")
    if "lpm_cosine" in m:
        lines.append(f"  layer-peeled model with the run's budgets E_W = {m['lpm_E_W']:.4g}, E_H = {m['lpm_E_H']:.4g}: "
                     f"cosine {_fmt(m['lpm_cosine'])}; parallel (cosine >= 0.999) from R = "
                     f"{_fmt(m['lpm_parallel_ratio'])}")
    return lines
