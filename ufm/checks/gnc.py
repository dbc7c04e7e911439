"""Generalized neural collapse (HUG, Liu et al. 2023): the uniformity of proxies and class means against the
target code of this K and d — the simplex ETF for K <= d + 1, else the spherical code — and against the bounds that
hold for every code (analysis.code_bounds): the best upper bound on the minimum angle (simplex, orthoplex, Rankin,
Levenshtein) and the universal lower bound on the Riesz energy, with the tables of best codes known where there are
any (Sloane's packings and the Thomson energies on S²)."""

from __future__ import annotations

import math

from analysis.code_bounds import asymptotic_energy, energy_lower_bound, max_min_angle_bound
from analysis.theory import etf_exists

NAME, ORDER = "gnc", 40


def applies(run) -> bool:
    cfg = run.cfg
    return ((cfg.loss.name == "hug" or not etf_exists(cfg.K, cfg.feature_dim)) and bool(run.final)
            and cfg.feature_dim > 1)


def bounds(K: int, d: int, s: float) -> dict:
    """What no code of K points in R^d beats: `angle_bound_deg` (the smallest upper bound on the minimum angle, by
    `angle_bound_name`), `energy_bound` (the ULB on the Riesz s-energy, `energy_bound_name`), and the asymptotic
    energy I_s·K²/2 where it exists (`energy_asymptotic`, an estimate, not a bound).
    >>> b = bounds(12, 3, 1.0); round(b["angle_bound_deg"], 4), round(b["energy_bound"], 6)
    (63.4349, 49.165253)
    """
    angle = max_min_angle_bound(K, d)
    energy = energy_lower_bound(K, d, s)
    out = {"angle_bound_deg": math.degrees(angle.value), "angle_bound_name": angle.name,
           "energy_bound": energy.value, "energy_bound_name": energy.name}
    asym = asymptotic_energy(K, d, s)
    if asym is not None:
        out["energy_asymptotic"] = asym
    return out


def compute(run) -> dict:
    """The `gnc` block: the measured uniformity of proxies (W) and class means against the bounds (always) and against
    the target code of this K and d (the ETF or the spherical code, when it fits its time budget: else `skipped`
    says why), with the code's own quality (its gaps to the bounds and to the tables) in `target`."""
    cfg, final, problem = run.cfg, run.final, run.problem
    K, d, s = cfg.K, cfg.feature_dim, problem.gnc_exponent
    out = {"etf_exists": etf_exists(K, d)}
    b = out["bounds"] = bounds(K, d, s)
    for who in ("W", "means"):
        e, a = final.get(f"energy_{who}"), final.get(f"min_angle_{who}")
        if e is not None and math.isfinite(e):
            out[f"energy_{who}"] = e
            out[f"energy_rel_gap_to_bound_{who}"] = (e - b["energy_bound"]) / abs(b["energy_bound"])
        if a is not None and math.isfinite(a):
            out[f"min_angle_{who}"] = a
            out[f"angle_gap_to_bound_{who}_deg"] = b["angle_bound_deg"] - a
    code = problem.code
    if code is None:  # estimated over its time budget: the measured uniformity and the bounds alone
        out["skipped"] = problem.code_note
        return out
    deg = math.degrees(code.min_angle)
    target = {"kind": "simplex_etf" if code.exact else f"{code.kind}_code", "s": code.s, "energy": code.energy,
              "min_angle_deg": deg}
    if not code.exact:
        target.update(restarts=code.restarts, iterations=code.iterations, seconds=code.seconds, device=code.device,
                      converged=code.converged, timed_out=code.timed_out, cached=code.cached)
    quality = code.quality()
    target.update({k: v for k, v in quality.items() if k not in b})
    out["target"] = target
    for who in ("W", "means"):
        if f"energy_{who}" in out:
            out[f"energy_rel_gap_{who}"] = (out[f"energy_{who}"] - code.energy) / abs(code.energy)
        if f"min_angle_{who}" in out:
            out[f"angle_gap_{who}_deg"] = deg - out[f"min_angle_{who}"]
    return out


def _bound_line(g: dict) -> str:
    b = g["bounds"]
    return (f"  bounds for any code: min angle <= {b['angle_bound_deg']:.4f}° ({b['angle_bound_name']}), "
            f"energy >= {b['energy_bound']:.10g} ({b['energy_bound_name']})")


def lines(g: dict) -> list[str]:
    if "target" not in g:
        measured = ", ".join(f"{k} {g[k]:.6g}" for k in ("energy_W", "energy_means", "min_angle_W", "min_angle_means")
                             if k in g)
        return [f"GNC: {g['skipped']}; measured {measured}", *([_bound_line(g)] if "bounds" in g else [])]
    t = g["target"]
    target = "the simplex ETF" if t["kind"] == "simplex_etf" else f"the {t['kind'].replace('_', ' ')}"
    parts = []
    for who, label in (("W", "classifier/proxies"), ("means", "class means")):
        if f"energy_{who}" in g:
            parts.append(f"{label}: energy {g[f'energy_{who}']:.10g} (rel. gap {g[f'energy_rel_gap_{who}']:.2e}), "
                         f"min angle {g[f'min_angle_{who}']:.4f}° (gap {g[f'angle_gap_{who}_deg']:.2e}°)")
    head = (f"GNC against {target} (Riesz s = {t['s']:g} energy {t['energy']:.10g}, min angle "
            f"{t['min_angle_deg']:.4f}°):")
    out = [head, *("  " + p for p in parts)]
    if "bounds" in g:
        out.append(_bound_line(g))
        if "energy_rel_gap_to_bound" in t:
            quality = (f"  the target: min angle {t['angle_gap_to_bound_deg']:.3g}° below its bound, energy "
                       f"{t['energy_rel_gap_to_bound']:.2e} (relative) above its bound")
            if "table_min_angle_deg" in t:
                quality += f"; {t['angle_gap_to_table_deg']:.2e}° below the best angle known"
            if "table_energy" in t:
                quality += f"; energy {t['energy_rel_gap_to_table']:.2e} (relative) above the best known"
            out.append(quality)
    return out
