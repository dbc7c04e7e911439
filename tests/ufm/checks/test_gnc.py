"""The GNC block (ufm.checks.gnc): the measured uniformity against the bounds every code obeys and against the target
code with its own quality (the gaps to the bounds and to the tables), and a code over its time budget skipped at
once with a note naming the estimate and --code-budget."""

import math
from types import SimpleNamespace

import pytest

from analysis.code_bounds import THOMSON_3, energy_lower_bound, max_min_angle_bound
from analysis.spherical_codes import spherical_code
from ufm.checks import gnc
from ufm.checks.theory import hug_target
from ufm.config import ConfigError, SimConfig
from ufm.problem import resolve


def end_of_run(cfg: SimConfig, final: dict) -> SimpleNamespace:
    """What the check reads of a run: the configuration, the problem and the final measurements."""
    return SimpleNamespace(cfg=cfg, problem=resolve(cfg), final=final)


def test_the_block_holds_the_bounds_the_target_and_its_quality():
    """K = 8 > d + 1 = 4 in R³: the bounds (Levenshtein's angle, the ULB), the target code (the Thomson code of 8
    points) with its gap to the bounds and to the Thomson table, and the gaps of the measured proxies to both."""
    cfg = SimConfig(K=8, d=3, n=2, loss="hug")
    code = spherical_code(8, 3)
    final = {"energy_W": code.energy * (1 + 1e-4), "min_angle_W": math.degrees(code.min_angle) - 0.5}
    g = gnc.compute(end_of_run(cfg, final))
    b = g["bounds"]
    assert b["angle_bound_deg"] == pytest.approx(math.degrees(max_min_angle_bound(8, 3).value))
    assert b["angle_bound_name"] == "levenshtein" and b["energy_bound"] == energy_lower_bound(8, 3).value
    t = g["target"]
    assert t["kind"] == "energy_code" and t["energy"] == code.energy and t["restarts"] == code.restarts
    assert t["table_energy"] == THOMSON_3[8] and abs(t["energy_rel_gap_to_table"]) < 1e-10
    assert t["energy_rel_gap_to_bound"] == pytest.approx((code.energy - b["energy_bound"]) / b["energy_bound"])
    assert g["energy_rel_gap_W"] == pytest.approx(1e-4) and g["angle_gap_W_deg"] == pytest.approx(0.5)
    assert g["angle_gap_to_bound_W_deg"] == pytest.approx(b["angle_bound_deg"] - final["min_angle_W"])
    assert "energy_means" not in g  # measured W only
    lines = gnc.lines(g)
    assert lines[0].startswith("GNC against the energy code") and "bounds for any code" in lines[-2]
    assert "above the best known" in lines[-1]


def test_a_code_over_its_budget_is_skipped_at_once_with_the_estimate_and_the_flag():
    """`--K 20000 --d 64 --loss ce`: K > d + 1, so the GNC check applies; the code's search is estimated (one tiled
    pass measured on a few hundred rows) at far more than the budget: no search runs, one note names the estimate
    and --code-budget; the bounds and the measured values are still reported."""
    cfg = SimConfig(K=20000, d=64, n=1, loss="ce")
    g = gnc.compute(end_of_run(cfg, {"energy_W": 2.0e8, "min_angle_W": 70.0}))
    assert "target" not in g and "--code-budget SECONDS" in g["skipped"] and "would take about" in g["skipped"]
    assert g["bounds"]["angle_bound_name"] == "levenshtein" and g["energy_W"] == 2.0e8
    assert gnc.lines(g)[0].startswith("GNC: the reference spherical code of K = 20000 directions in R^64 is not")
    assert hug_target(resolve(SimConfig(K=20000, d=64, n=1, loss="hug"))).applies is False


def test_the_budget_is_a_flag_of_the_configuration():
    assert SimConfig.from_dict({"loss": "hug", "code_budget": 600}).loss.code_budget == 600
    with pytest.raises(ConfigError, match="code_budget must be"):
        SimConfig.from_dict({"loss": "hug", "code_budget": 0})


def test_the_theory_target_says_how_good_the_code_is():
    reason = hug_target(resolve(SimConfig(K=10, d=3, n=2, loss="hug"))).reason
    assert "best of 8 numerical restarts" in reason and "above the ULB" in reason and "levenshtein bound" in reason
