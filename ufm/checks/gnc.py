"""Generalized neural collapse (HUG, Liu et al. 2023): the uniformity of proxies and class means against the
target code of this K and d — the simplex ETF for K <= d + 1, else the spherical code."""

from __future__ import annotations

import math

from analysis.theory import etf_exists

NAME, ORDER = "gnc", 40


def applies(run) -> bool:
    cfg = run.cfg
    return ((cfg.loss.name == "hug" or not etf_exists(cfg.K, cfg.feature_dim)) and bool(run.final)
            and cfg.feature_dim > 1)


def compute(run) -> dict:
    """The `gnc` block: the measured uniformity of proxies and class means against the target code of
    this K and d (the ETF or the spherical code), reported for HUG and for every run with K > d + 1."""
    cfg, final, code = run.cfg, run.final, run.problem.code
    out = {"etf_exists": etf_exists(cfg.K, cfg.feature_dim)}
    if code is None:  # too large to compute in seconds: the measured uniformity alone
        out["skipped"] = run.problem.code_note
        for who in ("W", "means"):
            for key in (f"energy_{who}", f"min_angle_{who}"):
                if final.get(key) is not None and math.isfinite(final[key]):
                    out[key] = final[key]
        return out
    deg = math.degrees(code.min_angle)
    out["target"] = {"kind": "simplex_etf" if code.exact else f"{code.kind}_code", "s": code.s,
                     "energy": code.energy, "min_angle_deg": deg}
    for who in ("W", "means"):
        e, a = final.get(f"energy_{who}"), final.get(f"min_angle_{who}")
        if e is not None and math.isfinite(e):
            out[f"energy_{who}"], out[f"energy_rel_gap_{who}"] = e, (e - code.energy) / abs(code.energy)
        if a is not None and math.isfinite(a):
            out[f"min_angle_{who}"], out[f"angle_gap_{who}_deg"] = a, deg - a
    return out


def lines(g: dict) -> list[str]:
    if "target" not in g:
        measured = ", ".join(f"{k} {g[k]:.6g}" for k in ("energy_W", "energy_means", "min_angle_W", "min_angle_means")
                             if k in g)
        return [f"GNC: {g['skipped']}; measured {measured}"]
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
