"""The convex certificate of a run's end point (DESIGN §5.5): the convex program's primal value (upper) and dual
bound (lower), and the run's distance to the lower bound.

Where d >= the rank of the program's optimum (and the features are free) the program's optimum is this UFM's
global optimum F*. Where d < rank (CE without a bias: K > d + 1) or the features are non-negative, the program
is only a convex relaxation of this UFM: its value is a lower bound on F*, and the line says so first and never
calls it the global optimum."""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from analysis.certificate import SOLVER_RTOL, nuclear_norm_certificate
from ufm.problem import Problem

NAME, ORDER = "certificate", 20

# the program is a G×G matrix problem with an SVD per iteration (G: the distinct counts of a count-group
# program; K for soft labels and registered losses, whose program is the general one): measured 185 s for the
# general program at G = K = 1000 on 2 cores (README); larger programs are not solved at the end of a run
MAX_GROUPS = 1000


def program_loss(problem: Problem):
    """The loss as the convex program knows it: a built-in name, or a registered loss as analysis's CustomLoss."""
    entry = problem.loss
    if entry.builtin:
        return entry.name
    from analysis.nuclear_program import CustomLoss

    return CustomLoss(entry.name, entry.per_sample, entry.conjugate, shift_invariant=entry.shift_invariant)


def convex_optimum(problem: Problem, progress: bool = False):
    """(ConvexOptimum, "") from analysis.certificate (the first-order solver on the count-group program,
    certified by its dual bound), or (None, why it was skipped). A progress bar appears on stderr when
    the solve takes more than two seconds. What the program raises (a registered loss that breaks its contract:
    not convex, say) is raised: `EndOfRun.convex` records it, and the certificate's block is {"failed": why}."""
    cfg, loss = problem.cfg, problem.cfg.loss
    if cfg.depth > 1:
        return None, f"depth {cfg.depth}: the deep UFM is not a nuclear-norm program"
    if problem.loss.features_only:
        return None, f"--loss {loss.name} is a loss of the features alone, not of logits: no nuclear-norm program"
    if cfg.normalize != "none":
        return None, f"--normalize {cfg.normalize}: on the sphere the UFM is not a nuclear-norm program"
    if not problem.loss.convex:
        return None, {"hxe": "HXE is not convex in the logits",
                      "haframe": "the HAFrame classifier is fixed: no nuclear-norm program",
                      "hug": "HUG is a loss of directions, not of logits: no nuclear-norm program",
                      "focal": "the focal loss is not convex in the logits"}.get(
            loss.name, f"loss {loss.name!r} is not declared convex in the logits (register_loss(..., convex=True))")
    if min(cfg.wd_W, cfg.wd_H) <= 0:
        return None, "needs wd_W > 0 and wd_H > 0"
    general = not problem.loss.builtin or loss.name == "soft"  # every class its own group
    groups = cfg.K if general else len(np.unique(cfg.class_counts))
    if groups > MAX_GROUPS:
        what = ("the general program (every class its own group)" if general else
                f"the count-group program ({groups} distinct counts)")
        return None, (f"{what} is a {groups}×{groups} matrix program with an SVD per iteration: more than "
                      f"{MAX_GROUPS} groups are not solved at the end of a run")
    bar = CertificateProgress() if progress else None
    try:
        # the built-in losses' hyper-parameters; a registered loss carries its targets itself
        options = {} if not problem.loss.builtin else dict(
            smoothing=loss.smoothing, target_scale=loss.target_scale,
            soft_targets=problem.soft_targets if loss.name == "soft" else None)
        return nuclear_norm_certificate(cfg.class_counts, program_loss(problem), cfg.wd_W, cfg.wd_H, cfg.wd_b,
                                        cfg.bias, callback=bar, **options), ""
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


def applies(run) -> bool:
    return True


def compute(run) -> dict:
    """The certificate block: "certified" when the relative gap of upper and lower is <= rtol; gap =
    objective − lower >= 0 always (about 0: the run is at the global optimum)."""
    convex, skipped = run.convex
    if run.convex_failure:  # the program could not be formed or solved (a user's loss): the table's one line
        return {"failed": run.convex_failure}
    if convex is None:
        return {"applies": False, "reason": skipped}
    c = convex.certificate
    out = {"applies": True, "certified": c.certified, "status": "certified" if c.certified else "not certified",
           "upper": c.upper, "lower": c.lower, "certificate_gap": c.gap, "certificate_rel_gap": c.rel_gap,
           "rtol": c.rtol, "optimum": c.upper, "solver": c.solver, "solver_seconds": c.seconds,
           "iterations": c.iterations, "rank": convex.rank,
           "groups": int(len(convex.group_counts)) if convex.group_counts is not None else None,
           "lower_bound_only": run.cfg.d < convex.rank or run.cfg.features == "nonneg"}
    if out["lower_bound_only"]:
        out["lower_bound_reason"] = ("non-negative features (the program's factors are free)"
                                     if run.cfg.features == "nonneg" else f"d = {run.cfg.d} < rank {convex.rank}")
        out["meaning"] = "the optimum of the convex relaxation: a lower bound on this UFM's F*"
    else:
        out["meaning"] = "this UFM's global optimum F*"
    if convex.grams_note:
        out["grams"] = convex.grams_note
    if getattr(c, "note", ""):
        out["note"] = c.note
    final_loss = run.final.get("loss")
    if final_loss is not None and math.isfinite(c.lower):
        out["gap"] = final_loss - c.lower
        out["rel_gap"] = out["gap"] / abs(c.lower) if c.lower else out["gap"]
    return out


def lines(block: dict) -> list[str]:
    if not block.get("applies"):
        return [f"certificate: skipped ({block.get('reason', 'no finite measurement')})"]
    return _certified_lines(block)


def _certified_lines(c: dict) -> list[str]:
    """The certificate line. Where the program only relaxes this UFM (d < rank, non-negative features) it says
    that first, and gives the lower bound on F*; it never calls the relaxation's optimum the global optimum."""
    verdict = (f"certified (relative gap {c['certificate_rel_gap']:.1e} <= {c['rtol']:g})" if c["certified"] else
               f"NOT certified (relative gap {c['certificate_rel_gap']:.1e} > {c['rtol']:g})")
    solver = f"{c['solver']}, {c['iterations']} iterations, {c['solver_seconds']:.2f} s"
    if c["lower_bound_only"]:
        lines = [f"certificate: bounds the convex relaxation, a lower bound on this UFM's F* "
                 f"({c.get('lower_bound_reason', 'd < rank')}): F* >= {c['lower']:.15g}; the relaxation's optimum "
                 f"{verdict} in [{c['lower']:.15g}, {c['upper']:.15g}] ({solver})"]
    else:
        lines = [f"certificate: {verdict}: global optimum F* in [{c['lower']:.15g}, {c['upper']:.15g}] ({solver})"]
    if "gap" in c:
        lines.append(f"  objective − lower bound = {c['gap']:.3e} (relative {c['rel_gap']:.2e})")
    return lines
