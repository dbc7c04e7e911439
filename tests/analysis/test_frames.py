"""HAFrame (Liang & Davis 2023; DESIGN §5.2): S from the LCA heights, W with WWᵀ = S, the PSD bound."""

import numpy as np
import pytest

from analysis.frames import FrameError, decay_matrix, haframe, haframe_gram, haframe_optimum, psd_bound
from analysis.hierarchy import load


@pytest.mark.parametrize("spec", ["cifar100", "balanced:2,5,10", "fgvc_aircraft", "tiered_imagenet_h"])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_frame_gram_equals_S(spec, gamma):
    D = load(spec).lca_heights
    frame = haframe(D, gamma, d=len(D) + 7)
    np.testing.assert_allclose(frame.W @ frame.W.T, frame.S, atol=1e-10, rtol=0)
    np.testing.assert_allclose(np.diag(frame.S), 1.0, atol=1e-14)
    # the formula S = (1 − s_min)·exp(−γ d/d_max) + s_min, entry by entry
    expected = (1 - frame.s_min) * np.exp(-gamma * D / D.max()) + frame.s_min
    np.testing.assert_allclose(frame.S, expected, atol=1e-15)


def test_psd_bound_makes_S_singular_and_below_it_S_is_refused():
    D = load("cifar100").lca_heights
    bound = psd_bound(D, 2.0)
    assert np.linalg.eigvalsh(haframe_gram(D, 2.0, bound))[0] == pytest.approx(0, abs=1e-10)
    assert np.linalg.eigvalsh(haframe_gram(D, 2.0, bound + 0.01))[0] > 1e-4
    with pytest.raises(FrameError, match=r"not positive semidefinite \(smallest eigenvalue -[0-9.e-]+\)"):
        haframe_gram(D, 2.0, bound - 0.01)


def test_flat_tree_frame_is_the_simplex_etf():
    """For a flat tree every d_ij = 1, so S = (1 − s)e^{−γ} + s off the diagonal: at the PSD bound that
    common cosine is −1/(K−1) and S is the simplex ETF Gram."""
    K = 7
    D = load(f"flat:{K}").lca_heights
    e = np.exp(-1.3)
    assert psd_bound(D, 1.3) == pytest.approx((-1 / (K - 1) - e) / (1 - e), rel=1e-12)
    S = haframe(D, 1.3).S
    np.testing.assert_allclose(S, K / (K - 1) * (np.eye(K) - 1 / K), atol=1e-12)


def test_psd_bound_formula_against_bisection():
    D = load("balanced:2,3").lca_heights
    E = decay_matrix(D, 2.0)
    lo, hi = -1.0, 0.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if np.linalg.eigvalsh((1 - mid) * E + mid)[0] >= 0 else (mid, hi)
    assert psd_bound(D, 2.0) == pytest.approx(hi, abs=1e-12)


def test_frame_in_fewer_dimensions_than_classes():
    D = load("balanced:2,5").lca_heights  # K = 10, S singular at the bound: rank 9
    frame = haframe(D, 2.0, d=9)
    np.testing.assert_allclose(frame.W @ frame.W.T, frame.S, atol=1e-10)
    with pytest.raises(FrameError, match="needs d >= rank"):
        haframe(D, 2.0, d=8)


def test_fixed_frame_optimum_is_stationary_and_beats_nearby_points():
    """The per-class optimum: gradient ~0, and F grows along random perturbations."""
    D = load("balanced:2,3").lca_heights
    frame = haframe(D, 2.0, d=6)
    counts, alpha, lam = [5] * 6, 0.4, 5e-3
    opt = haframe_optimum(frame.W, frame.S, counts, alpha, lam)
    assert opt.grad_norm < 1e-9

    def F(H):  # the UFM objective written out, one feature per class
        Z = H @ frame.W.T
        lse = np.log(np.exp(Z - Z.max(1, keepdims=True)).sum(1)) + Z.max(1)
        ce = lse - np.diag(Z)
        cos = ((Z / np.linalg.norm(H, axis=1, keepdims=True) - frame.S) ** 2).sum(1)
        N = sum(counts)
        return float(np.dot(counts, (1 - alpha) * ce + alpha * cos) / N + lam / 2 * np.dot(counts, (H**2).sum(1)))

    assert F(opt.features) == pytest.approx(opt.value, rel=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert F(opt.features + 1e-4 * rng.standard_normal(opt.features.shape)) > opt.value
