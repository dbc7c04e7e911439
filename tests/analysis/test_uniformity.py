"""Hyperspherical uniformity and spherical codes (Thomson and Tammes problems; Liu et al. 2023)."""

import itertools
import math

import numpy as np
import pytest
import torch

from analysis.frames import simplex_etf_points, spherical_code
from analysis.metrics import gnc_metrics
from analysis.uniformity import etf_riesz_energy, gram_log_det, min_angle, riesz_energy

# Published minimal Coulomb energies of the Thomson problem, N points on S² (Wales & Ulker 2006; the
# values tabulated in every survey of the problem). The routine must compute them, not look them up.
THOMSON = {2: 0.500000000, 3: 1.732050808, 4: 3.674234614, 5: 6.474691495, 6: 9.985281374,
           7: 14.452977414, 8: 19.675287861, 9: 25.759986531, 10: 32.716949460, 11: 40.596450510,
           12: 49.165253058}
# Tammes problem on S²: the largest possible minimum angle (degrees) of N points
TAMMES = {5: 90.0, 6: 90.0, 7: 77.8695, 8: 74.8585, 12: 63.4349}


@pytest.mark.parametrize("N", sorted(THOMSON))
def test_spherical_code_reproduces_the_thomson_energies(N):
    code = spherical_code(N, 3)
    assert code.energy == pytest.approx(THOMSON[N], rel=1e-6)
    np.testing.assert_allclose(np.linalg.norm(code.points, axis=1), 1.0, atol=1e-12)
    assert code.exact == (N <= 4)


@pytest.mark.parametrize("N", sorted(TAMMES))
def test_maxmin_code_reaches_the_tammes_angles(N):
    assert math.degrees(spherical_code(N, 3, kind="maxmin").min_angle) == pytest.approx(TAMMES[N], abs=2e-4)


def test_measures_against_naive_loops():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 4)) * rng.uniform(0.5, 2, (7, 1))
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    pairs = list(itertools.combinations(range(7), 2))
    dist = [np.linalg.norm(U[i] - U[j]) for i, j in pairs]
    assert float(riesz_energy(X, 1.0)) == pytest.approx(sum(1 / r for r in dist), rel=1e-13)
    assert float(riesz_energy(X, 2.5)) == pytest.approx(sum(r**-2.5 for r in dist), rel=1e-13)
    assert float(riesz_energy(X, 0)) == pytest.approx(sum(-math.log(r) for r in dist), rel=1e-13)
    angles = [math.acos(np.clip(U[i] @ U[j], -1, 1)) for i, j in pairs]
    assert float(min_angle(X)) == pytest.approx(min(angles), rel=1e-12)
    G = np.exp(-np.square(np.linalg.norm(U[:, None] - U[None], axis=2)) / (2 * 0.7**2))
    assert float(gram_log_det(X, 0.7)) == pytest.approx(np.linalg.slogdet(G)[1], rel=1e-10)


def test_measures_stay_differentiable_on_tensors():
    X = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    riesz_energy(X).backward()
    assert X.grad is not None and torch.isfinite(X.grad).all()


@pytest.mark.parametrize("K, d", [(2, 1), (4, 3), (5, 8), (10, 9)])
def test_simplex_etf_points_and_energy(K, d):
    P = simplex_etf_points(K, d)
    G = P @ P.T
    np.testing.assert_allclose(G, K / (K - 1) * np.eye(K) - 1 / (K - 1), atol=1e-12)
    assert float(riesz_energy(P, 1.0)) == pytest.approx(etf_riesz_energy(K, 1.0), rel=1e-12)


def test_gnc_metrics_against_a_direct_computation():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(5), 8)
    H = rng.standard_normal((5, 3))[y] * 3 + 0.3 * rng.standard_normal((40, 3))
    W = rng.standard_normal((5, 3))
    m = gnc_metrics(H, y, W, K=5)
    means = np.stack([H[y == k].mean(0) for k in range(5)])
    assert m["energy_means"] == pytest.approx(float(riesz_energy(means)), rel=1e-13)
    assert m["min_angle_W"] == pytest.approx(math.degrees(float(min_angle(W))), rel=1e-12)
    cos = [(h @ means[t]) / np.linalg.norm(h) / np.linalg.norm(means[t]) for h, t in zip(H, y, strict=True)]
    assert m["spherical_spread"] == pytest.approx(np.mean(1 - np.array(cos)), rel=1e-12)


def test_gnc_metrics_of_a_zero_class_mean_are_undefined():
    m = gnc_metrics([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], [0, 0, 1, 1], K=2)
    assert math.isnan(m["min_angle_means"]) and math.isnan(m["spherical_spread"])


def test_no_code_on_the_sphere_of_the_line():
    with pytest.raises(ValueError, match="two points"):
        spherical_code(3, 1)


def test_align_configuration_undoes_a_rotation_and_a_relabelling():
    """ICP + orthogonal Procrustes recovers the icosahedron after a random orthogonal map and permutation."""
    from analysis.frames import spherical_code
    from analysis.uniformity import align_configuration

    code = torch.as_tensor(spherical_code(12, 3).points, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    Q = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]
    moved = (code @ Q)[torch.randperm(12, generator=g)]
    aligned, rms = align_configuration(moved, code)
    assert rms < 1e-10
    torch.testing.assert_close(aligned, moved, atol=1e-9, rtol=0)
