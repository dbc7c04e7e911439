"""The end-of-run table: quantity · measured · predicted · gap, then each check's lines, then the verdict."""

from __future__ import annotations

import math

from ufm.checks import check_lines
from ufm.output.format import fmt
from ufm.output.summary import ZERO_PREDICTION, reached

# rows always shown (when measured), then whatever else the theory predicts
_ROWS = ("loss", "W_norm_sq", "H_norm_sq", "nc1", "nc2", "nc3", "nc4", "accuracy")


def format_table(summary: dict, lines_of_checks: list[str] | None = None) -> str:
    """The end-of-run table of a summary (summary.json's dict); the checks' lines are rendered from the
    registered checks unless given (a run keeps the lines of the checks it ran with)."""
    final, theory = summary["final"], summary["theory"]
    predicted = theory["predicted"] if theory["applies"] else {}
    keys = [k for k in _ROWS if k in final] + [k for k in predicted if k not in _ROWS and k in final]
    lines = [f"{'quantity':<14}  {'measured':>12}  {'predicted':>12}  {'gap':>14}"]
    for k in keys:
        gap = summary["rel_gap"].get(k)
        kind = "" if gap is None else (" rel" if abs(predicted[k]) > ZERO_PREDICTION else " abs")
        lines.append(f"{k:<14}  {fmt(final[k]):>12}  {fmt(predicted.get(k)):>12}  {fmt(gap) + kind:>14}")
    head = f"theory: {theory['name']}" + ("" if theory["applies"] else f" does not apply: {theory['reason']}")
    if theory["applies"] and theory["reason"]:
        head += f" ({theory['reason']})"
    if theory.get("note"):
        head += f"\nnote: {theory['note']}"
    lines.extend(check_lines(summary) if lines_of_checks is None else lines_of_checks)
    cfg = summary["config"]
    K = cfg["K"]
    d = cfg["width"] if cfg.get("depth", 1) > 1 else cfg["d"]  # the classifier's input dimension
    if K > d + 1:
        lines.append(f"note: no simplex ETF exists for K = {K} > d + 1 = {d + 1}: NC2 and NC3 are not reported "
                     "(see the GNC line)")
    conv = "converged" if summary["converged"] else "not converged"
    tail = (f"{summary['steps']} steps in {summary['seconds']:.1f} s, {conv} "
            f"[{summary['converged_criterion']}; grad_norm {final.get('grad_norm', math.nan):.2e}]")
    return "\n".join([head, *lines, tail, verdict(summary)])


def verdict(summary: dict) -> str:
    """One line under the table saying what the run showed: reached the predicted (and certified) optimum, ended
    away from it, or had nothing to compare with. Where the certificate bounds only a convex relaxation (d < rank,
    non-negative features) it is never called the optimum. Example:
    >>> verdict({"status": "ok", "converged": True, "theory": {"name": "ce_etf", "applies": True},
    ...          "rel_gap": {"loss": 2e-7, "nc1": 1e-9}, "certificate": {"certified": True}, "doubts": []})
    'verdict: the run reached the predicted optimum ce_etf (largest gap 2.0e-07 on loss; certified)'
    >>> v = verdict({"status": "ok", "converged": False, "theory": {"name": "convex_optimum", "applies": False},
    ...              "certificate": {"certified": True, "lower_bound_only": True, "rel_gap": 4.0,
    ...                              "lower_bound_reason": "d = 4 < rank 19"}})
    >>> v.endswith("above the convex relaxation's lower bound on F* (d = 4 < rank 19: a bound, not the optimum)")
    True
    """
    if summary["status"] != "ok":
        return f"verdict: the run {summary['status']} before its end: no claim about the optimum"
    theory, gaps = summary["theory"], summary.get("rel_gap", {})
    cert = summary.get("certificate") or {}
    relaxation = bool(cert.get("lower_bound_only"))
    certified = "" if not cert.get("certified") else (
        "; the certificate bounds only the convex relaxation" if relaxation else "; certified")
    if not theory["applies"] or not gaps:
        if cert.get("certified") and "rel_gap" in cert and not relaxation:
            return (f"verdict: no closed form; the objective is {cert['rel_gap']:.1e} (relative) above the certified "
                    f"global optimum")
        if "rel_gap" in cert and relaxation:
            return (f"verdict: no theory target applies here; the objective is {cert['rel_gap']:.1e} (relative) above "
                    f"the convex relaxation's lower bound on F* ({cert.get('lower_bound_reason', 'd < rank')}: a "
                    "bound, not the optimum)")
        return "verdict: no theory target applies here: the measurements are reported without a reference"
    worst = max(gaps, key=lambda k: gaps[k])
    if reached(gaps, summary["converged"]):
        return (f"verdict: the run reached the predicted optimum {theory['name']} (largest gap {gaps[worst]:.1e} on "
                f"{worst}{certified})")
    why = "; ".join(summary.get("doubts") or []) or ("not converged yet" if not summary["converged"] else "")
    on = f"gap {gaps['loss']:.1e} on the objective" if "loss" in gaps else "no objective predicted"
    return (f"verdict: the run did NOT reach the predicted optimum {theory['name']} ({on}, largest "
            f"{gaps[worst]:.1e} on {worst}{'; ' + why if why else ''})")
