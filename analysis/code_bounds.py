"""Bounds on spherical codes and the best codes known, to say how good a numerical code is (the targets of
generalized neural collapse, HUG: Liu et al. 2023).

K unit vectors in R^d (the sphere S^{d−1}, n = d below as in the coding literature), inner products t_ij = ⟨x_i, x_j⟩:

- **Max-min angle** (Tammes). Every bound below is an upper bound on the largest possible minimum angle θ(K, d):
  * simplex bound (Rankin 1955): ‖Σ x_i‖² >= 0 gives max t_ij >= −1/(K−1), so θ <= arccos(−1/(K−1)); met by the
    simplex for K <= d + 1;
  * orthoplex bound (Rankin 1955): K > d + 1 points cannot all have t_ij < 0, so θ <= 90°; met for K <= 2d
    (subsets of the cross-polytope);
  * Rankin's cap bound (Rankin 1955, "The closest packing of spherical caps in n dimensions"): points at angle
    >= θ = 2φ (φ < 45°) number at most
    R(n, θ) = √π·Γ((n−1)/2)·sin β·tan β / (2Γ(n/2)·∫_0^β sin^{n−2}u·(cos u − cos β) du),  sin β = √2·sin φ;
  * Levenshtein's bound (Levenshtein 1979, 1992; "Universal bounds for codes and designs", Handbook of Coding
    Theory 1998): a code with max t_ij <= s has at most L(n, s) = f(1)/f_0 points, f = f_m^{(s)} the Levenshtein
    polynomial: with P^{a,b}_k the monic Jacobi polynomials of (1 − t)^{α+a}(1 + t)^{β+b}, α = β = (n − 3)/2, and
    D_k(t) = P_k(t)P_{k−1}(s) − P_k(s)P_{k−1}(t) (zero at t = s),
      m = 2k − 1, s in [t^{1,1}_{k−1}, t^{1,0}_k]:  f(t) = (t − s)·(D_k^{1,0}(t)/(t − s))²,
      m = 2k,     s in [t^{1,0}_k, t^{1,1}_k]:      f(t) = (t + 1)(t − s)·(D_k^{1,1}(t)/(t − s))²,
    t^{a,b}_k the largest zero of P^{a,b}_k (t^{1,1}_0 = −1) and f_0 = ∫ f dμ_n, dμ_n ∝ (1 − t²)^{(n−3)/2} dt.
    L(n, ·) is continuous and increasing, so θ <= arccos(s*) with L(n, s*) = K. L_1 = (s − 1)/s and
    L_2 = 2n(1 − s)/(1 − ns) are the simplex and orthoplex bounds.
- **Riesz s-energy** E_s = Σ_{i<j} ‖x_i − x_j‖^{−s} (s = 0: Σ −log ‖x_i − x_j‖), h(t) = (2 − 2t)^{−s/2}:
  * the universal lower bound (ULB; Boyvalenkov, Dragnev, Hardin, Saff & Stoyanova, "Universal lower bounds for
    potential energy of spherical codes", Constr. Approx. 44, 2016), a Delsarte–Yudin linear-programming bound
    (Yudin 1992): with s* as above (L(n, s*) = K) and the 1/K-quadrature nodes α_i (the zeros of the Levenshtein
    polynomial: s*, the other zeros of D_k, and −1 when m is even) and weights ρ_i > 0 (exact for degree <= m:
    Σ ρ_i g(α_i) = g_0 − g(1)/K),
      E_s >= (K²/2)·Σ_i ρ_i h(α_i)
    for every h absolutely monotone on [−1, 1) (Riesz s > 0 and the log potential are). The certificate is the
    Hermite interpolant f of h at the nodes (double nodes, −1 simple): f <= h by the Hermite remainder, its
    Gegenbauer coefficients are >= 0, and E_s >= (K² f_0 − K f(1))/2 (`energy_certificate` rebuilds and checks it);
  * the asymptotic value I_s·K²/2 (I_s the energy integral of the uniform measure; 0 < s < d − 1), the leading term
    of the minimal energy as K → ∞ — an estimate, not a bound (the next term is negative, so for large K the
    minimum lies below it).
- **Tables** of the best codes known: Sloane's table of packings on S² (Hardin, Sloane & Smith, N. J. A. Sloane,
  "Tables of spherical codes", neilsloane.com/packings, angles for N = 4…50 and N = 55, 60, …, 130; the numbers as
  reproduced in the public repositories that cite it); the Thomson problem's best energies on S² (Wales & Ulker
  2006, as tabulated in the Wikipedia article "Thomson problem", N = 2…58); and codes known optimal in d = 4, 5, 8
  (the 24-cell's kissing arrangement, the 600-cell, the 5-demicube, D5's roots, E8's roots). Sloane's own d = 4
  and d = 5 tables were not available offline: those dimensions carry only the known codes.

>>> round(math.degrees(max_min_angle_bound(12, 3).value), 4)     # the icosahedron meets Levenshtein's bound
63.4349
>>> round(energy_lower_bound(12, 3, 1.0).value, 6)               # ... and the ULB: Thomson's 49.165253058
49.165253
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import integrate, special
from scipy.linalg import eigvalsh_tridiagonal

# highest Levenshtein degree used: the bound needs degree ~ 2·(K/binom-like growth), i.e. m grows like K^{1/(d−1)};
# beyond it (K of tens of thousands in d = 3) the bounds stop at that degree (still valid, less sharp)
MAX_DEGREE = 120


# ------------------------------------------------------------------------------------------------------------------
# Jacobi polynomials of the Levenshtein framework
# ------------------------------------------------------------------------------------------------------------------

def _recurrence(k: int, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Monic recurrence p_{j+1} = (t − A_j)p_j − B_j p_{j−1} of the Jacobi weight (1 − t)^a (1 + t)^b, j < k:
    (A_0..A_{k−1}, B_1..B_{k−1}) (the classical closed forms; a, b >= 0 here)."""
    j = np.arange(k, dtype=np.float64)
    s = 2 * j + a + b
    denom = s * (s + 2)  # 0 only at j = 0 for a = b = 0 (Legendre), where A_0 = (b − a)/(a + b + 2) = 0
    A = np.divide(b * b - a * a, denom, out=np.zeros_like(s), where=denom != 0)
    jj = j[1:]
    ss = 2 * jj + a + b
    B = 4 * jj * (jj + a) * (jj + b) * (jj + a + b) / (ss * ss * (ss + 1) * (ss - 1))
    return A, B


def _zeros(k: int, a: float, b: float, shift: float = 0.0) -> np.ndarray:
    """The zeros of p_k(t) − shift·p_{k−1}(t) (p monic Jacobi (a, b)): the eigenvalues of the Jacobi matrix with its
    last diagonal entry raised by `shift` (the Golub–Welsch form; all real and simple)."""
    if k == 0:
        return np.zeros(0)
    A, B = _recurrence(k, a, b)
    diag = A.copy()
    diag[-1] += shift
    return eigvalsh_tridiagonal(diag, np.sqrt(B)) if k > 1 else diag


def _ratio(k: int, a: float, b: float, s: float) -> float:
    """p_k(s)/p_{k−1}(s) by the recurrence of the ratios (stable where p_k itself under- or overflows)."""
    A, B = _recurrence(k, a, b)
    r = s - A[0]
    for j in range(1, k):
        r = (s - A[j]) - B[j - 1] / r
    return r


@lru_cache(maxsize=256)
def _largest_zeros(n: int, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(t^{1,0}_k, t^{1,1}_k) for k = 1..kmax: the ends of the intervals of Levenshtein's bound in R^n."""
    alpha = (n - 3) / 2
    t10 = np.array([_zeros(k, alpha + 1, alpha)[-1] for k in range(1, kmax + 1)])
    t11 = np.array([_zeros(k, alpha + 1, alpha + 1)[-1] for k in range(1, kmax + 1)])
    return t10, t11


def _degree(n: int, s: float) -> int:
    """The degree m of Levenshtein's polynomial for max inner product s (the interval that holds s), <= MAX_DEGREE."""
    kmax = MAX_DEGREE // 2
    t10, t11 = _largest_zeros(n, kmax)
    for k in range(1, kmax + 1):
        if s <= t10[k - 1]:
            return 2 * k - 1
        if s <= t11[k - 1]:
            return 2 * k
    return 2 * kmax


def _nodes(n: int, s: float, m: int) -> np.ndarray:
    """The zeros of Levenshtein's polynomial f_m^{(s)} without multiplicity, increasing: those of D_k (s among them)
    and −1 for even m."""
    alpha = (n - 3) / 2
    k = (m + 1) // 2
    a, b = (alpha + 1, alpha) if m % 2 else (alpha + 1, alpha + 1)
    roots = _zeros(k, a, b, _ratio(k, a, b, s)) if k > 1 else np.array([s])
    # the eigenvalue nearest s is s itself (up to rounding): pin it
    roots[np.argmin(np.abs(roots - s))] = s
    return np.sort(np.concatenate([[-1.0], roots])) if m % 2 == 0 else np.sort(roots)


@lru_cache(maxsize=256)
def _measure(n: int, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Jacobi nodes and weights of dμ_n ∝ (1 − t²)^{(n−3)/2} on [−1, 1], weights summing to 1 (exact for
    polynomials of degree < 2·points)."""
    alpha = (n - 3) / 2
    x, w = special.roots_jacobi(points, alpha, alpha)
    return x, w / w.sum()


def _levenshtein_value(n: int, s: float, m: int) -> float:
    """L_m(n, s) = f(1)/f_0 for the Levenshtein polynomial of degree m (products normalized by their value at 1)."""
    nodes = _nodes(n, s, m)
    others = nodes[(nodes != s) & (nodes != -1.0)]
    x, w = _measure(n, m // 2 + 2)
    q = np.prod(((x[:, None] - others[None, :]) / (1 - others[None, :])) ** 2, axis=1) if len(others) else 1.0
    f = (x - s) * q
    top = 1 - s
    if m % 2 == 0:
        f = f * (x + 1) / 2
    return float(top / (w @ f))


def levenshtein_count(n: int, s: float) -> float:
    """L(n, s): no code in R^n with every inner product <= s has more points (Levenshtein 1979).
    >>> round(levenshtein_count(3, -0.5), 9), round(levenshtein_count(4, 0.0), 9)   # the triangle; the 2n orthoplex
    (3.0, 8.0)
    """
    _check_dim(n)
    if not -1 <= s < 1:
        raise ValueError(f"the inner-product bound s must lie in [−1, 1), got {s}")
    if s == -1:
        return 2.0
    return _levenshtein_value(n, s, _degree(n, s))


def _levenshtein_s(K: int, n: int) -> float:
    """s* with L(n, s*) = K: the inverses of L_1 and L_2 in closed form (K <= 2n), else bisection on the
    continuous increasing L, capped at the largest degree."""
    if K <= n + 1:
        return -1.0 / (K - 1)
    if K <= 2 * n:
        return (K - 2 * n) / (n * (K - 2))
    lo, hi = -1.0, 1.0 - 1e-15
    kmax = MAX_DEGREE // 2
    top = _largest_zeros(n, kmax)[1][-1]
    if levenshtein_count(n, top) < K:  # beyond the degrees used: the bound at the top of the last interval
        return float(top)
    hi = top
    while True:  # to the last representable midpoint (about 55 halvings)
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            return hi
        if levenshtein_count(n, mid) < K:
            lo = mid
        else:
            hi = mid


# ------------------------------------------------------------------------------------------------------------------
# the max-min angle
# ------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AngleBound:
    """An upper bound `value` (radians) on the largest possible minimum angle of K points in R^d, by `name`; the
    other bounds that apply in `all` (name → radians)."""

    value: float
    name: str
    all: dict


def _check_dim(n: int) -> None:
    if int(n) != n or n < 2:
        raise ValueError(f"the dimension must be an integer >= 2, got {n}")


def _check(K: int, d: int) -> None:
    if int(K) != K or K < 2:
        raise ValueError(f"K must be an integer >= 2, got {K}")
    _check_dim(d)


def rankin_count(d: int, theta: float) -> float:
    """Rankin's cap bound R(d, θ) on the number of points of S^{d−1} at pairwise angles >= θ, for 0 < θ < 90°
    (module docstring; Rankin 1955). Example: 13 points at 60° in R³ would be a kissing arrangement.
    >>> round(rankin_count(3, math.pi / 3), 4)
    16.4853
    """
    _check_dim(d)
    if not 0 < theta < math.pi / 2:
        raise ValueError(f"Rankin's cap bound needs 0 < θ < π/2, got {theta}")
    beta = math.asin(math.sqrt(2) * math.sin(theta / 2))
    sb = math.sin(beta)
    half = math.sin(beta / 2)
    # ∫_0^β sin^{d−2}u (cos u − cos β) du with u = βv and cos u − cos β = 2 sin(β(1+v)/2) sin(β(1−v)/2) (no
    # cancellation), scaled by sin^{d−2}β · 2 sin²(β/2) so that the integrand is 1 at v = 0 (no underflow)
    scaled, _ = integrate.quad(lambda v: (math.sin(beta * v) / sb) ** (d - 2) * math.sin(beta * (1 + v) / 2)
                               * math.sin(beta * (1 - v) / 2) / (half * half), 0, 1, epsabs=0, epsrel=1e-13, limit=200)
    log_integral = math.log(beta) + math.log(2 * half * half) + (d - 2) * math.log(sb) + math.log(scaled)
    log_r = (0.5 * math.log(math.pi) + special.gammaln((d - 1) / 2) + math.log(sb * math.tan(beta))
             - math.log(2) - special.gammaln(d / 2) - log_integral)
    return math.exp(log_r) if log_r < 700 else math.inf


def rankin_angle_bound(K: int, d: int) -> float:
    """The largest θ < 90° with R(d, θ) >= K (radians): no K points of S^{d−1} have a larger minimum angle (K > 2d;
    for K <= 2d the simplex and orthoplex bounds are the sharp ones and this returns π/2).
    >>> round(math.degrees(rankin_angle_bound(13, 3)), 3)         # Levenshtein's is sharper: 60.70°
    70.225
    """
    _check(K, d)
    if K <= 2 * d:
        return math.pi / 2
    lo, hi = 1e-6, math.pi / 2 - 1e-12
    if rankin_count(d, lo) < K:  # beyond any reasonable K: say nothing sharper than 1e-6 rad
        return lo
    while hi - lo > 1e-13:  # the quadrature's own precision
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rankin_count(d, mid) >= K else (lo, mid)
    return lo


def levenshtein_angle_bound(K: int, d: int) -> float:
    """arccos(s*) with L(d, s*) = K (radians): Levenshtein's bound on the minimum angle of K points in R^d.
    >>> round(math.degrees(levenshtein_angle_bound(240, 8)), 10)   # E8's roots meet it
    60.0
    """
    _check(K, d)
    return math.acos(min(1.0, max(-1.0, _levenshtein_s(K, d))))


def max_min_angle_bound(K: int, d: int) -> AngleBound:
    """The best upper bound known here on the minimum angle of K points in R^d: the smallest of the simplex,
    orthoplex (K > d + 1), Rankin cap (K > 2d) and Levenshtein bounds (module docstring). d = 2: the regular
    polygon's 2π/K, which is optimal.
    >>> b = max_min_angle_bound(6, 3); round(math.degrees(b.value), 9), b.name
    (90.0, 'orthoplex')
    """
    _check(K, d)
    if d == 2:
        return AngleBound(2 * math.pi / K, "polygon", {"polygon": 2 * math.pi / K})
    bounds = {"simplex": math.acos(-1 / (K - 1))}
    if K > d + 1:
        bounds["orthoplex"] = math.pi / 2
    if K > 2 * d:
        bounds["rankin"] = rankin_angle_bound(K, d)
    bounds["levenshtein"] = levenshtein_angle_bound(K, d)
    # rounding: Levenshtein's bound equals the simplex/orthoplex bounds where those are sharp; prefer the simple name
    name = min(bounds, key=lambda k: (round(bounds[k], 12), k != "simplex" and k != "orthoplex"))
    return AngleBound(bounds[name], name, bounds)


# ------------------------------------------------------------------------------------------------------------------
# the Riesz energy
# ------------------------------------------------------------------------------------------------------------------

def potential(t: np.ndarray | float, s: float) -> np.ndarray:
    """h(t) = (2 − 2t)^{−s/2} (s > 0) or −½·log(2 − 2t) (s = 0): the Riesz potential of two unit vectors with
    inner product t (the distance is √(2 − 2t)).
    >>> float(potential(-1.0, 1.0)), float(potential(0.0, 2.0))
    (0.5, 0.5)
    """
    t = np.asarray(t, dtype=np.float64)
    return -0.5 * np.log(2 - 2 * t) if s == 0 else (2 - 2 * t) ** (-s / 2)


def _potential_derivative(t: np.ndarray, s: float) -> np.ndarray:
    """h'(t): s·(2 − 2t)^{−s/2−1} (s > 0), 1/(2 − 2t) (s = 0)."""
    return 1 / (2 - 2 * t) if s == 0 else s * (2 - 2 * t) ** (-s / 2 - 1)


@dataclass(frozen=True)
class EnergyBound:
    """A lower bound `value` on the Riesz s-energy Σ_{i<j} of K points in R^d: the ULB of degree `degree` with the
    quadrature `nodes` and `weights` (module docstring)."""

    value: float
    degree: int
    nodes: tuple
    weights: tuple
    name: str = "ULB"


def _check_s(s: float) -> None:
    if not (math.isfinite(s) and s >= 0):
        raise ValueError(f"the Riesz exponent s must be a finite number >= 0, got {s}")


def _quadrature(K: int, d: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The nodes α_i and weights ρ_i of the 1/K-quadrature of degree m (Σ ρ_i g(α_i) = g_0 − g(1)/K, deg g <= m)."""
    s = _levenshtein_s(K, d)
    m = _degree(d, s)
    nodes = _nodes(d, s, m)
    x, w = _measure(d, m // 2 + 2)
    weights = []
    for i, a in enumerate(nodes):
        # ρ_i = Λ(ℓ_i) with ℓ_i the Lagrange basis polynomial of node i and Λ(g) = ∫ g dμ − g(1)/K
        others = np.delete(nodes, i)
        lx = np.prod((x[:, None] - others[None, :]) / (a - others[None, :]), axis=1)
        l1 = float(np.prod((1 - others) / (a - others)))
        weights.append(float(w @ lx) - l1 / K)
    return nodes, np.array(weights), m


def energy_lower_bound(K: int, d: int, s: float = 1.0) -> EnergyBound:
    """The universal lower bound (Boyvalenkov–Dragnev–Hardin–Saff–Stoyanova 2016) on Σ_{i<j} ‖x_i − x_j‖^{−s}
    (s = 0: the log energy) over K unit vectors in R^d: (K²/2)·Σ ρ_i h(α_i). Equal to the simplex energy for
    K <= d + 1 and to the cross-polytope's for K = 2d; d = 2: the regular polygon's energy (optimal).
    >>> round(energy_lower_bound(4, 3, 1.0).value, 9)              # the tetrahedron: 6/√(8/3)
    3.674234614
    """
    _check(K, d)
    _check_s(s)
    if d == 2:
        r = 2 * np.sin(np.pi * np.arange(1, K) / K)  # distances from one vertex of the regular K-gon
        value = K / 2 * float((-np.log(r)).sum() if s == 0 else (r ** -s).sum())
        return EnergyBound(value, 0, (), (), "polygon")
    nodes, weights, m = _quadrature(K, d)
    value = K * K / 2 * float(weights @ potential(nodes, s))
    return EnergyBound(value, m, tuple(nodes.tolist()), tuple(weights.tolist()))


@dataclass(frozen=True)
class EnergyCertificate:
    """The Delsarte–Yudin polynomial behind a ULB: its Gegenbauer coefficients f_0..f_m (of the normalized
    Gegenbauer polynomials, P_j(1) = 1), the bound (K² f_0 − K f(1))/2 it proves, and the checks: the smallest
    coefficient f_j (j >= 1; must be >= 0) and the largest f − h on a Chebyshev grid of [−1, 1) and at the nodes
    (must be <= 0 up to rounding)."""

    coefficients: np.ndarray
    value: float
    min_coefficient: float
    max_excess: float


def energy_certificate(K: int, d: int, s: float = 1.0, grid: int = 4001) -> EnergyCertificate:
    """Rebuild the ULB's certificate: f = the Hermite interpolant of h at the quadrature nodes (double nodes, −1
    simple), its Gegenbauer coefficients, and the LP bound (K² f_0 − K f(1))/2 (Delsarte–Yudin: f <= h on
    [−1, 1) and f_j >= 0 for j >= 1 imply E >= that). For moderate degrees (Newton's divided differences).
    >>> c = energy_certificate(12, 3, 1.0); round(float(c.value), 6), bool(c.min_coefficient >= 0), c.max_excess <= 1e-9
    (49.165253, True, True)
    """
    _check(K, d)
    _check_s(s)
    if d < 3:
        raise ValueError("the certificate is for d >= 3 (the circle's regular polygon is optimal)")
    nodes, _, m = _quadrature(K, d)
    z = np.concatenate([[a] if a == -1.0 else [a, a] for a in nodes])  # interpolation points with multiplicity
    # Newton divided differences with repeated points: f[z_i, z_i] = h'(z_i)
    coef = potential(z, s).astype(np.float64)
    table = coef.copy()
    out = [table[0]]
    for level in range(1, len(z)):
        new = np.empty(len(z) - level)
        for i in range(len(new)):
            if z[i + level] == z[i]:
                new[i] = _potential_derivative(np.array(z[i]), s)
            else:
                new[i] = (table[i + 1] - table[i]) / (z[i + level] - z[i])
        table = new
        out.append(table[0])
    newton = np.array(out)

    def f(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        acc = np.full_like(t, newton[-1])
        for c, zz in zip(newton[-2::-1], z[-2::-1], strict=True):
            acc = acc * (t - zz) + c
        return acc

    x, w = _measure(d, m + 2)
    alpha = (d - 3) / 2
    coeffs = []
    for j in range(m + 1):
        Pj = special.eval_jacobi(j, alpha, alpha, x) / special.eval_jacobi(j, alpha, alpha, 1.0)
        coeffs.append(float(w @ (f(x) * Pj)) / float(w @ (Pj * Pj)))
    coeffs = np.array(coeffs)
    value = (K * K * coeffs[0] - K * float(f(np.array(1.0)))) / 2
    ts = np.concatenate([np.cos(np.pi * (np.arange(grid) + 0.5) / grid), nodes[nodes > -1]])
    ts = ts[ts < 1 - 1e-9]
    excess = float(np.max((f(ts) - potential(ts, s)) / np.maximum(1.0, np.abs(potential(ts, s)))))
    return EnergyCertificate(coeffs, value, float(coeffs[1:].min()) if m >= 1 else 0.0, excess)


def energy_integral(d: int, s: float) -> float:
    """I_s = ∫∫ ‖x − y‖^{−s} dσ(x)dσ(y) over the uniform measure of S^{d−1} (0 < s < d − 1):
    2^{d−2−s}·Γ(d/2)·Γ((d−1−s)/2) / (√π·Γ(d−1−s/2)); s = 0: the log integral −log 2 + (ψ(d−1) − ψ((d−1)/2))/2.
    >>> round(energy_integral(3, 1.0), 12), round(energy_integral(3, 0.0), 12) == round(0.5 - math.log(2), 12)
    (1.0, True)
    """
    _check_dim(d)
    _check_s(s)
    if s == 0:
        return float(-math.log(2) + 0.5 * (special.digamma(d - 1) - special.digamma((d - 1) / 2)))
    if not s < d - 1:
        raise ValueError(f"the energy integral diverges for s >= d − 1 = {d - 1}, got s = {s}")
    return math.exp((d - 2 - s) * math.log(2) + special.gammaln(d / 2) + special.gammaln((d - 1 - s) / 2)
                    - 0.5 * math.log(math.pi) - special.gammaln(d - 1 - s / 2))


def asymptotic_energy(K: int, d: int, s: float = 1.0) -> float | None:
    """I_s·K²/2: the leading term of the minimal Riesz s-energy of K points as K → ∞ (0 <= s < d − 1; None for
    s >= d − 1, where the energy grows faster). An estimate, not a bound.
    >>> round(asymptotic_energy(100, 3, 1.0), 9)                   # I_1 = 1 on S²
    5000.0
    """
    _check(K, d)
    _check_s(s)
    return None if s >= d - 1 else energy_integral(d, s) * K * K / 2


# ------------------------------------------------------------------------------------------------------------------
# tables of the best codes known
# ------------------------------------------------------------------------------------------------------------------

# Sloane's table of packings on S² (the Tammes problem): the minimum angle in degrees of the best code known of N
# points (Hardin, Sloane & Smith; neilsloane.com/packings/index.html#I), N = 4…50, 55, 60, …, 130
SLOANE_3 = {
    4: 109.4712206, 5: 90.0, 6: 90.0, 7: 77.8695421, 8: 74.8584922, 9: 70.5287794, 10: 66.1468220,
    11: 63.4349488, 12: 63.4349488, 13: 57.1367031, 14: 55.6705700, 15: 53.6578501, 16: 52.2443957,
    17: 51.0903285, 18: 49.5566548, 19: 47.6919141, 20: 47.4310362, 21: 45.6132231, 22: 44.7401612,
    23: 43.7099642, 24: 43.6907671, 25: 41.6344612, 26: 41.0376616, 27: 40.6776007, 28: 39.3551436,
    29: 38.7136512, 30: 38.5971159, 31: 37.7098291, 32: 37.4752140, 33: 36.2545530, 34: 35.8077844,
    35: 35.3198076, 36: 35.1897322, 37: 34.4224080, 38: 34.2506607, 39: 33.4890466, 40: 33.1583563,
    41: 32.7290944, 42: 32.5063863, 43: 32.0906244, 44: 31.9834230, 45: 31.3230814, 46: 30.9591635,
    47: 30.7818159, 48: 30.7627855, 49: 29.9235851, 50: 29.7529564, 55: 28.2627914, 60: 27.1928300,
    65: 26.0698299, 70: 25.1709200, 75: 24.3017225, 80: 23.5530672, 85: 22.7791621, 90: 22.1540232,
    95: 21.5945501, 100: 21.0312020, 105: 20.5388524, 110: 20.1113276, 115: 19.6239931, 120: 19.3240201,
    125: 18.8448151, 130: 18.5103522,
}
# The Thomson problem on S²: the lowest Coulomb energy Σ_{i<j} 1/r_ij known for N points (Wales & Ulker 2006; the
# table of the Wikipedia article "Thomson problem"), N = 2…58
THOMSON_3 = {
    2: 0.500000000, 3: 1.732050808, 4: 3.674234614, 5: 6.474691495, 6: 9.985281374, 7: 14.452977414,
    8: 19.675287861, 9: 25.759986531, 10: 32.716949460, 11: 40.596450510, 12: 49.165253058, 13: 58.853230612,
    14: 69.306363297, 15: 80.670244114, 16: 92.911655302, 17: 106.050404829, 18: 120.084467447,
    19: 135.089467557, 20: 150.881568334, 21: 167.641622399, 22: 185.287536149, 23: 203.930190663,
    24: 223.347074052, 25: 243.812760299, 26: 265.133326317, 27: 287.302615033, 28: 310.491542358,
    29: 334.634439920, 30: 359.603945904, 31: 385.530838063, 32: 412.261274651, 33: 440.204057448,
    34: 468.904853281, 35: 498.569872491, 36: 529.122408375, 37: 560.618887731, 38: 593.038503566,
    39: 626.389009017, 40: 660.675278835, 41: 695.916744342, 42: 732.078107544, 43: 769.190846459,
    44: 807.174263085, 45: 846.188401061, 46: 886.167113639, 47: 927.059270680, 48: 968.713455344,
    49: 1011.557182654, 50: 1055.182314726, 51: 1099.819290319, 52: 1145.418964319, 53: 1191.922290416,
    54: 1239.361474729, 55: 1287.772720783, 56: 1337.094945276, 57: 1387.383229253, 58: 1438.618250640,
}
# codes known (and, but for the 24-cell and D5, proved) optimal for the minimum angle beyond d = 3, degrees:
# the 24-cell / D4 roots (the kissing arrangement of R⁴; Musin 2008 proved 24 the kissing number), the 600-cell
# (Levenshtein's bound is met), the 5-demicube (16 points, cosines 1/5 and −3/5; Levenshtein's bound is met), D5's
# 40 roots (the kissing arrangement known in R⁵) and E8's 240 roots (Levenshtein's bound is met)
KNOWN_ANGLES = {(4, 24): 60.0, (4, 120): 36.0, (5, 16): math.degrees(math.acos(0.2)), (5, 40): 60.0,
                (8, 240): 60.0}
TABLE_SOURCES = {"sloane": "Sloane's table of packings on S² (neilsloane.com/packings)",
                 "thomson": "best-known Thomson energies on S² (Wales & Ulker 2006)",
                 "known": "known optimal codes (24-cell, 600-cell, 5-demicube, D5, E8)"}


def table_min_angle(K: int, d: int) -> tuple[float, str] | None:
    """(degrees, source) of the best minimum angle known for K points in R^d from the tables, or None.
    >>> table_min_angle(13, 3)
    (57.1367031, "Sloane's table of packings on S² (neilsloane.com/packings)")
    """
    if d == 3 and K in SLOANE_3:
        return SLOANE_3[K], TABLE_SOURCES["sloane"]
    if (d, K) in KNOWN_ANGLES:
        return KNOWN_ANGLES[(d, K)], TABLE_SOURCES["known"]
    return None


def table_energy(K: int, d: int, s: float) -> tuple[float, str] | None:
    """(energy, source) of the lowest Riesz s-energy known from the tables (the Thomson problem: d = 3, s = 1), or
    None.
    >>> table_energy(12, 3, 1.0)[0]
    49.165253058
    """
    if d == 3 and s == 1 and K in THOMSON_3:
        return THOMSON_3[K], TABLE_SOURCES["thomson"]
    return None


# ------------------------------------------------------------------------------------------------------------------
# the quality of a code
# ------------------------------------------------------------------------------------------------------------------

def code_quality(K: int, d: int, s: float, energy: float, min_angle: float) -> dict:
    """How good K points in R^d with Riesz s-energy `energy` and minimum angle `min_angle` (radians) are, flat keys
    for a summary: the best upper bound on the minimum angle (`angle_bound_deg`, `angle_bound_name`, and the gap
    `angle_gap_to_bound_deg` = bound − measured >= 0), the ULB (`energy_bound`, `energy_rel_gap_to_bound` =
    (E − bound)/bound >= 0), the asymptotic energy I_s·K²/2 where it exists (`energy_asymptotic`,
    `energy_rel_to_asymptotic`), and the table values where there are any (`table_min_angle_deg`,
    `angle_gap_to_table_deg` = table − measured, `table_energy`, `energy_rel_gap_to_table`, `table_source`).
    >>> q = code_quality(4, 3, 1.0, 3.674234614, math.acos(-1 / 3))
    >>> abs(q["angle_gap_to_bound_deg"]) < 1e-9, abs(q["energy_rel_gap_to_bound"]) < 1e-9
    (True, True)
    """
    _check(K, d)
    angle = max_min_angle_bound(K, d)
    out = {"angle_bound_deg": math.degrees(angle.value), "angle_bound_name": angle.name,
           "angle_gap_to_bound_deg": math.degrees(angle.value - min_angle)}
    bound = energy_lower_bound(K, d, s)
    out.update(energy_bound=bound.value, energy_bound_name=bound.name,
               energy_rel_gap_to_bound=(energy - bound.value) / abs(bound.value))
    asym = asymptotic_energy(K, d, s)
    if asym is not None:
        out.update(energy_asymptotic=asym, energy_rel_to_asymptotic=(energy - asym) / abs(asym))
    sources = []
    t = table_min_angle(K, d)
    if t is not None:
        out.update(table_min_angle_deg=t[0], angle_gap_to_table_deg=t[0] - math.degrees(min_angle))
        sources.append(t[1])
    e = table_energy(K, d, s)
    if e is not None:
        out.update(table_energy=e[0], energy_rel_gap_to_table=(energy - e[0]) / abs(e[0]))
        sources.append(e[1])
    if sources:
        out["table_source"] = "; ".join(sources)
    return out
