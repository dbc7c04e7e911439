"""The end-of-run table: quantity · measured · predicted · gap, then each check's lines, then the verdict."""

from __future__ import annotations

import math

from ufm.checks import check_lines
from ufm.output.format import fmt
from ufm.output.summary import ZERO_PREDICTION

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
    return "\n".join([head, *lines, tail])
