"""The spherical-code search (analysis.spherical_codes): codes that meet the bounds where a bound is met (theorems),
Sloane's table and the Thomson energies reproduced, determinism by seed, the time budget (refusal with the estimate,
the deadline), and the disk cache (atomic, read back, a corrupt file recomputed)."""

import math

import numpy as np
import pytest

import analysis.spherical_codes as sc
from analysis.code_bounds import SLOANE_3, THOMSON_3, energy_lower_bound, max_min_angle_bound
from analysis.spherical_codes import CodeBudgetError, cache_dir, clear_memo, spherical_code


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private disk cache that stores every search (however short), and an empty in-process memo."""
    monkeypatch.setenv(sc.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(sc, "CACHE_MIN_SECONDS", 0.0)
    clear_memo()
    yield tmp_path / "cache" / "spherical_codes"
    clear_memo()


@pytest.mark.parametrize("K, d", [(12, 3), (16, 5), (8, 4), (7, 4)])
def test_maxmin_codes_meet_the_bound_where_it_is_met(K, d):
    """Levenshtein's bound is met by the icosahedron (12 in R³) and the 5-demicube (16 in R⁵, cosines 1/5 and −3/5);
    the orthoplex bound 90° by subsets of the cross-polytope (7, 8 in R⁴): the search reaches them."""
    code = spherical_code(K, d, "maxmin", restarts=3, progress=False)
    assert math.degrees(code.min_angle) == pytest.approx(math.degrees(max_min_angle_bound(K, d).value), abs=1e-6)
    np.testing.assert_allclose(np.linalg.norm(code.points, axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("N", [14, 15, 24])
def test_maxmin_codes_reproduce_sloanes_table(N):
    """Sloane's best packings on S² (N = 14: reached only by the restarts that skip the energy stage; 24: the snub
    cube). N = 13 needs 8 restarts (4 stop 0.56° short): the benchmark's --table rows show it."""
    assert math.degrees(spherical_code(N, 3, "maxmin", restarts=4, progress=False).min_angle) == pytest.approx(
        SLOANE_3[N], abs=2e-6)


def test_energy_codes_reproduce_the_thomson_table_and_lie_above_the_ulb():
    """The best Thomson energies known for N = 13…20 (Wales & Ulker 2006), to the table's 9 decimals, and above the
    universal lower bound (a theorem: no code lies below it)."""
    for N in range(13, 21):
        code = spherical_code(N, 3, restarts=2, progress=False)
        assert code.energy == pytest.approx(THOMSON_3[N], rel=1e-10, abs=1e-9), N
        assert code.energy >= energy_lower_bound(N, 3).value


def test_the_same_seed_gives_the_same_code():
    """Restart r of seed σ starts from the generator seeded σ·1000003 + r: the same points every time; another
    seed starts elsewhere."""
    a = sc._compute(30, 4, "energy", 1.0, 2, 7, 60.0, "cpu", False)
    b = sc._compute(30, 4, "energy", 1.0, 2, 7, 60.0, "cpu", False)
    c = sc._compute(30, 4, "energy", 1.0, 2, 8, 60.0, "cpu", False)
    np.testing.assert_array_equal(a.points, b.points)
    assert not np.allclose(a.points, c.points)
    assert (a.restarts, a.iterations) == (b.restarts, b.iterations)


def test_a_search_over_its_budget_is_refused_with_the_estimate():
    """K = 3000 in R^64 on the CPU is estimated at minutes per restart: refused at once, the message naming the
    estimate and the budget (no search runs)."""
    with pytest.raises(CodeBudgetError, match=r"would take about .* over the budget of 1 s") as e:
        spherical_code(3000, 64, budget=1.0, device="cpu")
    assert e.value.seconds > 1.0 and e.value.budget == 1.0


def test_the_deadline_cuts_a_restart(monkeypatch):
    """A search admitted by its estimate but slower than its budget stops at the deadline with what it has (unit
    vectors), says it did not converge, and runs no second restart."""
    monkeypatch.setattr(sc, "code_seconds", lambda *a, **k: 0.0)
    code = sc._compute(500, 8, "energy", 1.0, 4, 0, 0.1, "cpu", False)  # ~2 800 iterations needed: far over 0.1 s
    assert code.timed_out and not code.converged and code.restarts == 1
    np.testing.assert_allclose(np.linalg.norm(code.points, axis=1), 1.0, atol=1e-12)


def test_the_disk_cache_is_written_atomically_read_back_and_repaired(cache):
    code = spherical_code(10, 3, restarts=2, progress=False)
    files = list(cache.iterdir())
    assert [f.name for f in files] == [f"energy-K10-d3-s1-seed0-r2-v{sc.CODE_VERSION}.npz"]  # no temporary left
    clear_memo()
    again = spherical_code(10, 3, restarts=2, progress=False)
    assert again.cached and not code.cached
    np.testing.assert_array_equal(again.points, code.points)
    assert (again.energy, again.min_angle, again.restarts) == (code.energy, code.min_angle, code.restarts)
    files[0].write_bytes(b"not a zip file")  # a torn or foreign file: recomputed and overwritten
    clear_memo()
    repaired = spherical_code(10, 3, restarts=2, progress=False)
    assert not repaired.cached and repaired.energy == pytest.approx(code.energy, rel=1e-12)
    clear_memo()
    assert spherical_code(10, 3, restarts=2, progress=False).cached


def test_the_cache_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(sc.CACHE_ENV, "off")
    assert cache_dir() is None


def test_the_simplex_needs_no_search_and_frames_still_exports_the_codes():
    """K <= d + 1: the simplex ETF, exact; the names of analysis.frames are the same objects."""
    import analysis.frames as frames

    code = spherical_code(5, 4)
    assert code.exact and code.energy == pytest.approx(10 * math.sqrt(2 * 5 / 4) ** -1, rel=1e-13)
    assert frames.spherical_code is spherical_code and frames.SphericalCode is sc.SphericalCode
    assert frames.simplex_etf_points is sc.simplex_etf_points and frames.code_feasible is sc.code_feasible


@pytest.mark.parametrize("kwargs, message", [(dict(K=5, d=3, kind="tammes"), "kind"), (dict(K=1, d=3), "K >= 2"),
                                             (dict(K=5, d=3, budget=0), "budget"), (dict(K=5, d=3, restarts=0),
                                                                                     "restarts"),
                                             (dict(K=5, d=3, s=-1.0), "exponent"),
                                             (dict(K=50, d=3, device="tpu"), "device")])
def test_bad_input_is_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        spherical_code(**kwargs)
