"""Bounds on spherical codes (analysis.code_bounds): the simplex, orthoplex, Rankin and Levenshtein bounds on the
minimum angle, the universal lower bound (ULB) on the Riesz energy with its Delsarte–Yudin certificate, the energy
integral, and the tables of best codes known — each against a closed form, an independent computation or a theorem."""

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, special

from analysis.code_bounds import (
    SLOANE_3,
    THOMSON_3,
    asymptotic_energy,
    code_quality,
    energy_certificate,
    energy_integral,
    energy_lower_bound,
    levenshtein_angle_bound,
    levenshtein_count,
    max_min_angle_bound,
    rankin_count,
    table_energy,
    table_min_angle,
)


def riesz(P: np.ndarray, s: float) -> float:
    """Σ_{i<j} ‖p_i − p_j‖^{−s} (s = 0: −Σ log), a plain double loop."""
    total = 0.0
    for i, j in itertools.combinations(range(len(P)), 2):
        r = np.linalg.norm(P[i] - P[j])
        total += -math.log(r) if s == 0 else r**-s
    return total


def icosahedron() -> np.ndarray:
    phi = (1 + 5**0.5) / 2
    P = np.array([p for a in (-1, 1) for b in (-phi, phi) for p in ((0, a, b), (a, b, 0), (b, 0, a))], float)
    return P / np.linalg.norm(P, axis=1, keepdims=True)


def e8_roots() -> np.ndarray:
    """The 240 roots of E8: (±1, ±1, 0⁶) permuted and (±½)⁸ with an even number of minus signs."""
    roots = []
    for i, j in itertools.combinations(range(8), 2):
        for a, b in itertools.product((-1, 1), repeat=2):
            v = np.zeros(8)
            v[i], v[j] = a, b
            roots.append(v)
    for signs in itertools.product((-0.5, 0.5), repeat=8):
        if sum(x < 0 for x in signs) % 2 == 0:
            roots.append(np.array(signs))
    P = np.array(roots)
    return P / np.linalg.norm(P, axis=1, keepdims=True)


def cross_polytope(d: int) -> np.ndarray:
    return np.concatenate([np.eye(d), -np.eye(d)])


# --- the minimum angle -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [3, 5, 16])
def test_levenshtein_bounds_of_degree_1_and_2_are_the_simplex_and_orthoplex_bounds(n):
    """L_1(n, s) = (s − 1)/s on [−1, −1/n] and L_2(n, s) = 2n(1 − s)/(1 − ns) on [−1/n, 0] (Levenshtein 1979):
    the polynomials t − s and (t + 1)(t − s), whose f(1)/f_0 these are (f_0 = ∫ f dμ_n, ∫ t² dμ_n = 1/n)."""
    for s in np.linspace(-1, -1 / n, 7)[1:]:
        assert levenshtein_count(n, s) == pytest.approx((s - 1) / s, rel=1e-12)
    for s in np.linspace(-1 / n, 0, 7):
        assert levenshtein_count(n, s) == pytest.approx(2 * n * (1 - s) / (1 - n * s), rel=1e-12)


@pytest.mark.parametrize("n, s, N", [(3, 5**-0.5, 12), (5, 0.2, 16), (6, 0.25, 27), (7, 1 / 3, 56), (8, 0.5, 240),
                                     (22, 1 / 6, 275), (23, 0.2, 552), (23, 1 / 3, 4600), (24, 0.5, 196560)])
def test_levenshtein_bound_is_met_by_the_tight_codes(n, s, N):
    """The codes that meet Levenshtein's bound (Levenshtein 1992; the sharp configurations of Cohn & Kumar 2007):
    the icosahedron, the 5-demicube, the Schläfli (27) and Gosset (56) codes, E8's roots, the McLaughlin (275) and
    the 552- and 4600-point codes from the Leech lattice, and the Leech lattice's 196560 minimal vectors."""
    assert levenshtein_count(n, s) == pytest.approx(N, rel=1e-10)


def test_the_angle_bounds_of_the_simplex_the_orthoplex_and_e8():
    """K <= d + 1: the simplex bound arccos(−1/(K−1)) is met (and is the bound reported); d + 1 < K <= 2d: 90°
    (Rankin), met by the cross-polytope's subsets; E8's 240 roots at 60° meet Levenshtein's bound; the icosahedron's
    63.43° (arctan 2) too."""
    for K, d in [(2, 3), (4, 3), (9, 8), (65, 64)]:
        b = max_min_angle_bound(K, d)
        assert b.value == pytest.approx(math.acos(-1 / (K - 1)), abs=1e-12) and b.name == "simplex"
    for K, d in [(5, 3), (6, 3), (100, 64), (128, 64)]:
        b = max_min_angle_bound(K, d)
        assert b.value == pytest.approx(math.pi / 2, abs=1e-12) and b.name == "orthoplex"
    assert math.degrees(levenshtein_angle_bound(240, 8)) == pytest.approx(60.0, abs=1e-9)
    assert max_min_angle_bound(12, 3).value == pytest.approx(math.atan(2), abs=1e-10)


@pytest.mark.parametrize("d", [3, 4, 8])
def test_rankin_cap_bound_against_its_integral(d):
    """R(d, θ) = √π Γ((d−1)/2) sin β tan β / (2Γ(d/2) ∫_0^β sin^{d−2}u (cos u − cos β) du), sin β = √2 sin(θ/2)
    (Rankin 1955), the integral taken directly by quadrature here."""
    for theta in (0.3, 0.8, 1.4):
        beta = math.asin(math.sqrt(2) * math.sin(theta / 2))
        integral = integrate.quad(lambda u: math.sin(u) ** (d - 2) * (math.cos(u) - math.cos(beta)), 0, beta,
                                  epsabs=0, epsrel=1e-12)[0]
        direct = (math.sqrt(math.pi) * special.gamma((d - 1) / 2) * math.sin(beta) * math.tan(beta)
                  / (2 * special.gamma(d / 2) * integral))
        assert rankin_count(d, theta) == pytest.approx(direct, rel=1e-9)


def test_no_table_code_beats_the_bounds():
    """Every best-known angle (Sloane's table on S², the known codes of R⁴, R⁵, R⁸) lies below the bound on the
    max-min angle — equal only where the bound is met (N = 4, 6, 12 on S², the 5-demicube, E8)."""
    for N, deg in SLOANE_3.items():
        assert deg <= math.degrees(max_min_angle_bound(N, 3).value) + 1e-6, N
    for (d, N), deg in {(4, 24): 60.0, (4, 120): 36.0, (5, 16): math.degrees(math.acos(0.2)), (8, 240): 60.0}.items():
        assert table_min_angle(N, d)[0] == pytest.approx(deg)
        assert deg <= math.degrees(max_min_angle_bound(N, d).value) + 1e-9
    assert math.degrees(max_min_angle_bound(16, 5).value) == pytest.approx(math.degrees(math.acos(0.2)), abs=1e-9)


# --- the energy ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("s", [0.0, 1.0, 2.5])
def test_ulb_equals_the_simplex_and_cross_polytope_energies(s):
    """K <= d + 1: the ULB of degree 1 is K(K−1)/2·h(−1/(K−1)), the simplex's energy (optimal); K = 2d: degree 2,
    nodes −1 and 0, the cross-polytope's energy (Levenshtein's bound is met there)."""
    for K, d in [(3, 3), (4, 3), (6, 5), (9, 8)]:
        r = math.sqrt(2 * K / (K - 1))
        simplex = K * (K - 1) / 2 * (-math.log(r) if s == 0 else r**-s)
        assert energy_lower_bound(K, d, s).value == pytest.approx(simplex, rel=1e-12)
    for d in (3, 4, 7):
        assert energy_lower_bound(2 * d, d, s).value == pytest.approx(riesz(cross_polytope(d), s), rel=1e-12)


@pytest.mark.parametrize("s", [0.0, 1.0, 3.0])
def test_ulb_is_met_by_the_icosahedron_and_e8(s):
    """Sharp configurations are universally optimal (Cohn & Kumar 2007) and meet the ULB (Boyvalenkov et al. 2016)
    for every absolutely monotone potential: the icosahedron (N = 12, d = 3) and E8's roots (N = 240, d = 8)."""
    assert energy_lower_bound(12, 3, s).value == pytest.approx(riesz(icosahedron(), s), rel=1e-11)
    assert energy_lower_bound(240, 8, s).value == pytest.approx(riesz(e8_roots(), s), rel=1e-11)


def test_ulb_lies_below_every_best_known_thomson_energy():
    """The ULB is a lower bound: below the best energies known for N = 2…58 on S² (equal at N = 2, 3, 4, 6, 12)."""
    for N, E in THOMSON_3.items():
        bound = energy_lower_bound(N, 3, 1.0).value
        assert bound <= E * (1 + 1e-9), N
        if N in (2, 3, 4, 6, 12):
            assert bound == pytest.approx(E, rel=1e-9)


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")  # at 1e-13 the moments meet rounding
@pytest.mark.parametrize("K, d", [(13, 3), (40, 8), (1000, 64), (30, 4)])
def test_the_ulb_quadrature_is_exact(K, d):
    """The 1/K-quadrature: Σ ρ_i g(α_i) = ∫ g dμ_d − g(1)/K for every polynomial of degree <= m, its weights > 0
    (BDHSS 2016), checked on the monomials with the integral taken by adaptive quadrature of (1 − t²)^{(d−3)/2}."""
    b = energy_lower_bound(K, d, 1.0)
    nodes, weights = np.array(b.nodes), np.array(b.weights)
    assert (weights > 0).all()
    mass = integrate.quad(lambda t: (1 - t * t) ** ((d - 3) / 2), -1, 1, epsabs=0, epsrel=1e-13)[0]
    for k in range(b.degree + 1):
        moment = integrate.quad(lambda t: t**k * (1 - t * t) ** ((d - 3) / 2), -1, 1, epsabs=0, epsrel=1e-13)[0]
        assert weights @ nodes**k == pytest.approx(moment / mass - 1 / K, abs=1e-12), k


@pytest.mark.parametrize("K, d, s", [(13, 3, 1.0), (40, 8, 1.0), (1000, 64, 1.0), (50, 3, 0.0), (200, 16, 2.0)])
def test_the_ulb_certificate(K, d, s):
    """Delsarte–Yudin: the Hermite interpolant f of h at the nodes has f <= h on [−1, 1) (checked on a grid and at
    the nodes) and Gegenbauer coefficients f_j >= 0 (j >= 1), so E >= (K² f_0 − K f(1))/2 — equal to the ULB."""
    c = energy_certificate(K, d, s)
    assert c.min_coefficient >= -1e-12 * abs(c.coefficients[0])
    assert c.max_excess <= 1e-10
    assert c.value == pytest.approx(energy_lower_bound(K, d, s).value, rel=1e-9)


@pytest.mark.parametrize("d, s", [(3, 1.0), (3, 0.5), (4, 1.5), (8, 1.0), (64, 1.0), (5, 0.0)])
def test_energy_integral_against_quadrature(d, s):
    """I_s = ∫ (2 − 2t)^{−s/2} dμ_d(t) (the distance of two uniform points depends on their inner product t only),
    against the closed form 2^{d−2−s}Γ(d/2)Γ((d−1−s)/2)/(√π Γ(d−1−s/2)) (s = 0: the log integral)."""
    def weight(t):
        return (1 - t * t) ** ((d - 3) / 2)

    def h(t):
        return -0.5 * math.log(2 - 2 * t) if s == 0 else (2 - 2 * t) ** (-s / 2)

    mass = integrate.quad(weight, -1, 1, epsabs=0, epsrel=1e-12)[0]
    value = integrate.quad(lambda t: h(t) * weight(t), -1, 1, epsabs=0, epsrel=1e-12, limit=200)[0] / mass
    assert energy_integral(d, s) == pytest.approx(value, rel=1e-9)
    assert asymptotic_energy(10, d, s) == pytest.approx(50 * value, rel=1e-9)
    with pytest.raises(ValueError, match="diverges"):
        energy_integral(3, 2.0)


def test_code_quality_and_tables():
    """The gaps are measured against the bounds and the tables: zero for the icosahedron (optimal, both)."""
    P = icosahedron()
    angle = math.acos(max(P[i] @ P[j] for i, j in itertools.combinations(range(12), 2)))
    q = code_quality(12, 3, 1.0, riesz(P, 1.0), angle)
    assert abs(q["angle_gap_to_bound_deg"]) < 1e-8 and abs(q["energy_rel_gap_to_bound"]) < 1e-10
    assert abs(q["angle_gap_to_table_deg"]) < 1e-6 and abs(q["energy_rel_gap_to_table"]) < 1e-9
    assert table_energy(12, 3, 2.0) is None and table_min_angle(131, 3) is None


@pytest.mark.parametrize("call, message", [(lambda: max_min_angle_bound(1, 3), "K must"),
                                           (lambda: energy_lower_bound(5, 1), "dimension"),
                                           (lambda: energy_lower_bound(5, 3, -1.0), "exponent"),
                                           (lambda: levenshtein_count(3, 1.0), "inner-product"),
                                           (lambda: rankin_count(3, 2.0), "θ")])
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
