"""The spherical-code benchmark (benchmarks/spherical_code.py) runs at its --cpu-smoke size, so the rows the GPU check
and the many-classes benchmark take from it cannot rot: every row is measured and the numbers obey the bounds."""

import math

from benchmarks.spherical_code import code_benchmark, code_rows, main


def test_cpu_smoke_prints_every_row(capsys):
    main(["--cpu-smoke", "--restarts", "2"])
    out = capsys.readouterr().out
    for what in ("tiled vs dense autograd", "code search", "universal lower bound", "best upper bound", "asymptotic"):
        assert what in out, what
    assert "K=40 d=8 (energy, cpu)" in out


def test_the_result_obeys_the_bounds():
    """No code beats the bounds (theorems): its energy is above the ULB and its minimum angle below the Levenshtein
    bound; the search's record adds up."""
    r = code_benchmark(20, 4, "maxmin", restarts=2, device="cpu")
    assert r["energy_rel_gap_to_bound"] >= 0 and r["angle_gap_to_bound_deg"] >= -1e-9
    assert r["restarts"] == 2 and r["iterations"] > 0 and math.isfinite(r["pass_seconds"]["tiled"])
    assert len(code_rows(r)) >= 4


def test_a_search_over_its_budget_is_a_row_not_a_traceback():
    r = code_benchmark(3000, 64, budget=1.0, device="cpu")
    rows = code_rows(r)
    assert len(rows) == 1 and rows[0][2] == "not run" and "over the budget" in rows[0][3]
