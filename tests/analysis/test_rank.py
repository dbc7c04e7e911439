"""analysis.rank against naive float64 references written from the papers' formulas, and the second moment of
analysis.metrics.SufficientStats against the stacked features:

- effective rank (Roy & Vetterli 2007): exp(−Σ p_i log p_i), p_i = σ_i / Σ_j σ_j, 0 log 0 = 0;
- RankMe (Garrido et al. 2023): exp(−Σ p_k log p_k), p_k = σ_k / ‖σ‖₁ + 1e-7 over the min(N, d) singular values.
"""

import math

import numpy as np
import pytest
import torch

from analysis import effective_rank, effective_rank_gram, rankme, rankme_gram
from analysis.metrics import SufficientStats


def naive_erank(X):
    s = np.linalg.svd(np.asarray(X, dtype=np.float64), compute_uv=False)
    p = s / s.sum()
    return math.exp(-sum(q * math.log(q) for q in p if q > 0))


def naive_rankme(X, eps=1e-7):
    s = np.linalg.svd(np.asarray(X, dtype=np.float64), compute_uv=False)  # min(N, d) values
    p = s / np.abs(s).sum() + eps
    return math.exp(-sum(q * math.log(q) for q in p))


def matrices():
    rng = np.random.default_rng(0)
    low = rng.normal(size=(40, 3)) @ rng.normal(size=(3, 12))  # rank 3 in d = 12
    decaying = rng.normal(size=(60, 8)) * np.logspace(0, -3, 8)  # singular values over 3 decades
    return {"full": rng.normal(size=(30, 7)), "wide": rng.normal(size=(5, 9)), "rank 3": low,
            "decaying": decaying, "offset": rng.normal(size=(25, 6)) + 1e3}


@pytest.mark.parametrize("name", list(matrices()))
def test_effective_rank_and_rankme_match_the_formulas(name):
    X = matrices()[name]
    assert effective_rank(X) == pytest.approx(naive_erank(X), rel=1e-12)
    assert rankme(X) == pytest.approx(naive_rankme(X), rel=1e-12)
    s = np.linalg.svd(X, compute_uv=False)
    assert effective_rank(s) == pytest.approx(naive_erank(X), rel=1e-12)  # from the singular values
    assert rankme(s) == pytest.approx(naive_rankme(X), rel=1e-12)
    assert effective_rank(torch.from_numpy(X).float()) == pytest.approx(naive_erank(X), rel=1e-5)  # float32 input


@pytest.mark.parametrize("name", list(matrices()))
def test_the_gram_route_equals_the_svd_of_the_features(name):
    X = matrices()[name]
    G = X.T @ X
    n = X.shape[0]
    assert effective_rank_gram(G) == pytest.approx(naive_erank(X), rel=1e-10)
    assert rankme_gram(G, n) == pytest.approx(naive_rankme(X), rel=1e-10)


def test_known_values():
    # r equal singular values: erank r, whatever the scale; a rank-1 matrix: 1
    assert effective_rank(5.0 * np.eye(4)) == pytest.approx(4.0, rel=1e-15)
    assert effective_rank(np.outer([1.0, 2.0, 3.0], [1.0, -1.0])) == pytest.approx(1.0, rel=1e-15)
    # RankMe's ε counts the zeros: σ = (1, 0, 0) has p = (1 + ε, ε, ε)
    eps = 1e-7
    p = np.array([1 + eps, eps, eps])
    assert rankme([1.0, 0.0, 0.0]) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-15)
    assert rankme([1.0, 0.0, 0.0], eps=0.0) == 1.0
    # the Gram of a rank-2 matrix in d = 5: exactly 2 nonzero singular values (its rounding noise is cut)
    X = np.random.default_rng(1).normal(size=(30, 2)) @ np.random.default_rng(2).normal(size=(2, 5))
    assert rankme_gram(X.T @ X, 30) == pytest.approx(naive_rankme(X), rel=1e-10)
    # n < d: only min(n, d) singular values count in RankMe
    Y = np.random.default_rng(3).normal(size=(3, 6))
    assert rankme_gram(Y.T @ Y, 3) == pytest.approx(naive_rankme(Y), rel=1e-10)
    assert rankme_gram(Y.T @ Y) != pytest.approx(naive_rankme(Y), rel=1e-10)  # d = 6 values: three extra zeros


def test_undefined_and_bad_input():
    assert math.isnan(effective_rank(np.zeros((3, 2)))) and math.isnan(rankme(np.zeros((3, 2))))
    assert math.isnan(effective_rank([[1.0, math.nan]])) and math.isnan(rankme_gram([[math.inf, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="non-negative"):
        effective_rank([1.0, -1.0])
    with pytest.raises(ValueError, match="X must be a matrix"):
        effective_rank(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="G must be a square"):
        effective_rank_gram(np.ones((2, 3)))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        rankme_gram(np.eye(2), 0)
    with pytest.raises(ValueError, match="eps must be a non-negative number"):
        rankme(np.eye(2), eps=-1.0)
    with pytest.raises(TypeError, match="X must be an array of numbers"):
        effective_rank("abc")


def naive_second_moment(H, center=False):
    H = np.asarray(H, dtype=np.float64)
    if center:
        H = H - H.mean(0)
    return sum(np.outer(h, h) for h in H)


def stream(H, y, K, batch, **kwargs):
    st = SufficientStats(K, H.shape[1], **kwargs)
    for i in range(0, len(y), batch):
        st.add(torch.from_numpy(H[i:i + batch]), torch.from_numpy(y[i:i + batch]))
    return st


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_second_moment_of_sufficient_statistics_is_exact(offset):
    rng = np.random.default_rng(4)
    K, d = 4, 6
    y = rng.permutation(np.repeat(np.arange(K), [7, 12, 1, 9]))
    H = offset + 3 * rng.normal(size=(K, d))[y] + rng.normal(size=(len(y), d))
    st = stream(H, y, K, batch=5)
    ref = naive_second_moment(H)
    np.testing.assert_allclose(st.second_moment().numpy(), ref, rtol=1e-13, atol=1e-13 * np.abs(ref).max())
    ref_c = naive_second_moment(H, center=True)
    # centered: exact to the size of the spread, not of the offset (nothing of size μ_G is subtracted)
    np.testing.assert_allclose(st.second_moment(center=True).numpy(), ref_c, rtol=1e-9,
                               atol=1e-12 * np.abs(ref_c).max())
    # and the ranks from it equal those of the stacked features
    assert rankme_gram(st.second_moment(), len(y)) == pytest.approx(naive_rankme(H), rel=1e-9)
    centered = H - H.mean(0)
    assert effective_rank_gram(st.second_moment(center=True)) == pytest.approx(naive_erank(centered), rel=1e-9)


def test_second_moment_after_a_merge_and_with_a_missing_class():
    rng = np.random.default_rng(5)
    K, d = 5, 3
    y = rng.integers(0, 4, size=40)  # class 4 never occurs
    H = rng.normal(size=(40, d)) + 2.0
    a, b = stream(H[:17], y[:17], K, batch=4), stream(H[17:], y[17:], K, batch=6)
    a.merge(b)
    np.testing.assert_allclose(a.second_moment().numpy(), naive_second_moment(H), rtol=1e-13)
    np.testing.assert_allclose(a.second_moment(center=True).numpy(), naive_second_moment(H, center=True),
                               rtol=1e-12, atol=1e-12)
