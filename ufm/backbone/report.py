"""The end-of-run table of a backbone run: quantity · training set · test set (· UFM twin · theory)."""

from __future__ import annotations

from ufm.checks import milestones
from ufm.output.format import fmt

ROWS = ("data_loss", "accuracy", "nc1", "nc2", "nc3", "nc4", "ncc_accuracy", "W_norm_sq", "mistake_severity",
        "hier_dist@1", "hier_dist@5", "angular_mean", "hier_nc2")
TEST_NAME = {"data_loss": "loss"}  # the test set's key where it differs


def format_backbone_table(summary: dict) -> str:
    """The table; the twin's columns where the twin ran to its end (an interrupted twin has no numbers: one line
    says so instead)."""
    final, test, twin = summary["final"], summary["test"], summary.get("ufm")
    ufm = twin if twin and "final" in twin else None
    theory = summary["theory"]
    predicted = theory.get("predicted", {}) if theory.get("applies") else {}
    head = f"{'quantity':<18}  {'train':>12}  {'test':>12}"
    if ufm:
        head += f"  {'UFM twin':>12}  {'theory':>12}"
    lines = [head]
    for k in ROWS:
        if k not in final:
            continue
        line = f"{k:<18}  {fmt(final[k]):>12}  {fmt(test.get(TEST_NAME.get(k, k))):>12}"
        if ufm:
            line += f"  {fmt(ufm['final'].get(k)):>12}  {fmt(predicted.get(k)):>12}"
        lines.append(line)
    cfg, t = summary["config"], summary["timing"]
    lines.extend(milestones.lines(summary["milestones"]))
    if ufm:
        lines.append(f"UFM twin ({ufm['run_dir']}): theory {theory['name']}, {ufm['steps']} steps, "
                     f"{'converged' if ufm['converged'] else 'not converged'}; plot: {summary.get('plot')}")
    elif twin:
        lines.append(f"UFM twin ({twin['run_dir']}): {twin.get('status', 'not run')}, no comparison (--resume runs "
                     "it again)")
    eps = t["epochs_per_second"]
    lines.append(f"{cfg['arch']} on {cfg['dataset']} ({cfg['K']} classes, d = {cfg['d']}), {summary['epochs']} epochs "
                 f"in {t['train_seconds']:.1f} s ({fmt(eps)} epochs/s) + {t['measurements']} NC measurements "
                 f"({fmt(t['mean_measure_seconds'])} s each) on {summary['device']}, amp {summary['amp']}")
    return "\n".join(lines)
