"""analysis.metrics against a naive full-covariance implementation of DESIGN §5.1 (Papyan et al. 2020)."""

import numpy as np
import pytest
import torch

from analysis.metrics import class_means, etf_distance, nc_metrics, nc_metrics_streaming

RTOL = 1e-9  # the pseudo-inverse cut-off, the same on both sides


def naive_nc(H, y, W, b, K, global_mean="samples"):
    """Straight from the definitions: d×d covariances, a d×d pseudo-inverse, N×K distances."""
    H = np.asarray(H, dtype=np.float64)
    N, d = H.shape
    mu = np.stack([H[y == k].mean(0) for k in range(K)])
    mu_G = H.mean(0) if global_mean == "samples" else mu.mean(0)
    M = mu - mu_G
    D = H - mu[y]
    Sigma_W = D.T @ D / N
    Sigma_B = M.T @ M / K
    out = {"nc1": np.trace(Sigma_W @ np.linalg.pinv(Sigma_B, rcond=RTOL, hermitian=True)) / K}
    E = (np.eye(K) - np.ones((K, K)) / K) / np.sqrt(K - 1)

    def etf_dist(G):
        return np.linalg.norm(G / np.linalg.norm(G) - E)

    out["nc2"] = etf_dist(M @ M.T)
    out["nc3"] = etf_dist(W @ M.T)
    out["nc2_W"] = etf_dist(W @ W.T)
    predicted = np.argmax(H @ W.T + b, axis=1)
    dist = ((H[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
    nearest = np.argmin(dist, axis=1)
    out["nc4"] = np.mean(predicted != nearest)
    out["accuracy"] = np.mean(predicted == y)
    out["ncc_accuracy"] = np.mean(nearest == y)
    sd = np.linalg.norm(W / np.linalg.norm(W) - M / np.linalg.norm(M))
    out["self_duality"], out["self_duality_sq"] = sd, sd**2
    for name, X in (("means", M), ("W", W)):
        norms = np.linalg.norm(X, axis=1)
        out[f"equinorm_{name}"] = norms.std() / norms.mean()
        cos = (X @ X.T) / np.outer(norms, norms)
        pairs = cos[np.triu_indices(K, 1)]
        out[f"equiangular_{name}"] = pairs.std()
        out[f"maxangle_{name}"] = np.abs(pairs + 1 / (K - 1)).mean()
    out["tr_sigma_W"] = np.trace(Sigma_W)
    out["tr_sigma_B"] = np.trace(Sigma_B)
    return out


def gaussian_classes(K, d, counts, spread=3.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), counts)
    centers = spread * rng.normal(size=(K, d))
    H = centers[y] + rng.normal(size=(len(y), d))
    W = centers + 0.5 * rng.normal(size=(K, d))
    b = 0.1 * rng.normal(size=K)
    return H, y, W, b


def assert_agree(ours, ref):
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key


@pytest.mark.parametrize("K,d", [(5, 20), (10, 4), (3, 3)], ids=["d>K", "d<K", "d=K"])
def test_matches_naive_balanced(K, d):
    H, y, W, b = gaussian_classes(K, d, [30] * K)
    assert_agree(nc_metrics(H, y, W, b, rtol=RTOL), naive_nc(H, y, W, b, K))


@pytest.mark.parametrize("global_mean", ["samples", "classes"])
def test_matches_naive_imbalanced(global_mean):
    K, d = 6, 12
    H, y, W, b = gaussian_classes(K, d, [50, 40, 30, 10, 5, 2])
    ours = nc_metrics(H, y, W, b, global_mean=global_mean, rtol=RTOL)
    assert_agree(ours, naive_nc(H, y, W, b, K, global_mean))


def test_imbalanced_weightings_differ_and_coincide_when_balanced():
    H, y, W, b = gaussian_classes(4, 8, [40, 10, 10, 10])
    a, c = (nc_metrics(H, y, W, b, global_mean=g)["nc1"] for g in ("samples", "classes"))
    assert abs(a - c) > 1e-3 * a
    H, y, W, b = gaussian_classes(4, 8, [10] * 4)
    a, c = (nc_metrics(H, y, W, b, global_mean=g)["nc1"] for g in ("samples", "classes"))
    assert a == pytest.approx(c, rel=1e-12)


def test_rank_deficient_means():
    # classes 0 and 1 share one mean up to 1e-7 (exact ties would make nearest-mean decisions
    # arbitrary): numerically the centered means have rank K - 2 < K - 1
    K, d = 5, 10
    H, y, W, b = gaussian_classes(K, d, [20] * K)
    H[y == 1] += H[y == 0].mean(0) - H[y == 1].mean(0) + 1e-7 * np.random.default_rng(5).normal(size=d)
    ours = nc_metrics(H, y, W, b, rtol=RTOL)
    assert ours["rank_means"] == K - 2
    assert_agree(ours, naive_nc(H, y, W, b, K))


def test_more_classes_than_dimensions_plus_one():
    K, d = 12, 3  # means span at most 3 dimensions
    H, y, W, b = gaussian_classes(K, d, [15] * K)
    ours = nc_metrics(H, y, W, b, rtol=RTOL)
    assert ours["rank_means"] == d
    assert_agree(ours, naive_nc(H, y, W, b, K))


def simplex_etf(K, d, scale=2.0):
    """K unit-norm simplex-ETF vectors (times scale) embedded in R^d, d >= K."""
    E = np.eye(K) - np.ones((K, K)) / K
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    Q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(d, d)))
    return scale * E @ Q[:K]


def test_exact_collapse_gives_zeros():
    # Papyan's terminal phase exactly: features at their class means, means a simplex ETF, W = means
    K, d, n = 6, 9, 7
    means = simplex_etf(K, d)
    y = np.repeat(np.arange(K), n)
    out = nc_metrics(means[y] + 5.0, y, means, -means @ np.full(d, 5.0))  # a global offset changes nothing
    for key in ("nc1", "nc2", "nc3", "nc4", "nc2_W", "self_duality", "equinorm_means", "equinorm_W",
                "equiangular_means", "maxangle_means", "maxangle_W", "tr_sigma_W"):
        assert out[key] == pytest.approx(0.0, abs=1e-12), key
    assert out["accuracy"] == 1.0 and out["ncc_accuracy"] == 1.0


def test_etf_distance_is_scale_invariant_and_zero_on_etf():
    K = 7
    G = (K / (K - 1)) * (np.eye(K) - np.ones((K, K)) / K)
    assert etf_distance(3.0 * G) == pytest.approx(0.0, abs=1e-14)
    # an orthonormal frame's Gram (I) is at distance ||I/√K − E||_F = √(2 − 2/√(K−1)·(K−1)/√K)
    expected = np.sqrt(2 - 2 * np.sqrt(K - 1) / np.sqrt(K))
    assert etf_distance(np.eye(K)) == pytest.approx(expected, rel=1e-12)


def test_numpy_and_torch_inputs_agree():
    H, y, W, b = gaussian_classes(4, 6, [10] * 4)
    a = nc_metrics(H, y, W, b)
    c = nc_metrics(torch.from_numpy(H), torch.from_numpy(y), torch.from_numpy(W), torch.from_numpy(b))
    assert a == c


def test_float32_features_close_to_float64():
    H, y, W, b = gaussian_classes(5, 16, [20] * 5)
    a = nc_metrics(H, y, W, b)
    c = nc_metrics(H.astype(np.float32), y, W.astype(np.float32), b.astype(np.float32))
    for key in ("nc1", "nc2", "nc3"):
        assert c[key] == pytest.approx(a[key], rel=1e-5), key


def test_streaming_equals_in_memory():
    K = 5
    H, y, W, b = gaussian_classes(K, 8, [13, 27, 8, 30, 22])
    order = np.random.default_rng(3).permutation(len(y))
    batches = [(H[order[i:i + 17]], y[order[i:i + 17]]) for i in range(0, len(y), 17)]
    streamed = nc_metrics_streaming(batches, K, W, b)
    in_memory = nc_metrics(H, y, W, b)
    for key, value in in_memory.items():
        assert streamed[key] == pytest.approx(value, rel=1e-10, abs=1e-14), key
    # a generator factory works too (a DataLoader-like source that is consumed once per pass)
    again = nc_metrics_streaming(lambda: iter(batches), K, W, b)
    assert again["nc1"] == pytest.approx(in_memory["nc1"], rel=1e-10)


def test_chunked_second_pass_matches_naive(monkeypatch):
    # force many small chunks in the second pass
    import analysis.metrics as m
    monkeypatch.setattr(m, "_CHUNK_ELEMENTS", 40)
    H, y, W, b = gaussian_classes(4, 10, [25] * 4)
    assert_agree(nc_metrics(H, y, W, b, rtol=RTOL), naive_nc(H, y, W, b, 4))


def test_without_classifier_nc3_nc4_are_nan():
    H, y, _, _ = gaussian_classes(4, 6, [10] * 4)
    out = nc_metrics(H, y)
    assert np.isnan(out["nc3"]) and np.isnan(out["nc4"])
    assert np.isfinite(out["nc1"]) and np.isfinite(out["nc2"])


def test_class_means():
    H, y, _, _ = gaussian_classes(3, 4, [5, 6, 7])
    expected = np.stack([H[y == k].mean(0) for k in range(3)])
    np.testing.assert_allclose(class_means(H, y, 3).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("bad,match", [
    (lambda H, y: (H, y[:-1]), "rows"),
    (lambda H, y: (H, np.where(y == 2, 7, y)), "labels must lie"),
    (lambda H, y: (H[y != 1], y[y != 1]), "without samples"),
    (lambda H, y: (H[:, 0], y), "2-D"),
    (lambda H, y: (H, y.astype(float)), "integers"),
])
def test_bad_input_is_a_clear_error(bad, match):
    H, y, W, _ = gaussian_classes(3, 4, [5, 6, 7])
    with pytest.raises(ValueError, match=match):
        nc_metrics(*bad(H, y), K=3)


def test_wrong_classifier_shape():
    H, y, W, _ = gaussian_classes(3, 4, [5, 6, 7])
    with pytest.raises(ValueError, match="W must have shape"):
        nc_metrics(H, y, W[:, :2])


def test_float32_near_collapse_matches_float64_on_the_same_data():
    # within-class spread 1e-5 on an offset of 10: float32 class sums or float32-rounded means would
    # swamp the spread; sums are float64 and the rounding of the means is corrected exactly
    rng = np.random.default_rng(7)
    K, d, n = 10, 64, 2000
    y = np.repeat(np.arange(K), n)
    H32 = (10.0 + rng.normal(size=(K, d))[y] + 1e-5 * rng.normal(size=(K * n, d))).astype(np.float32)
    W = rng.normal(size=(K, d)).astype(np.float32)
    a = nc_metrics(H32, y, W)
    c = nc_metrics(H32.astype(np.float64), y, W.astype(np.float64))
    for key in ("nc1", "tr_sigma_W", "nc2", "nc3"):
        assert a[key] == pytest.approx(c[key], rel=1e-4), key
    assert a["nc4"] == c["nc4"] and a["accuracy"] == c["accuracy"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features(dtype):
    g = torch.Generator().manual_seed(0)
    K, d, n = 4, 16, 3000
    y = torch.arange(K).repeat_interleave(n)
    H = (20 + torch.randn(K, d, generator=g)[y] + 0.3 * torch.randn(K * n, d, generator=g)).to(dtype)
    a = nc_metrics(H, y)
    c = nc_metrics(H.double(), y)
    for key in ("nc1", "tr_sigma_W", "nc2"):
        assert a[key] == pytest.approx(c[key], rel=1e-4), key


def test_nonfinite_features_give_nan_not_an_exception():
    H, y, W, b = gaussian_classes(4, 6, [10] * 4)
    H[3, 2] = np.inf
    out = nc_metrics(H, y, W, b)
    assert np.isnan(out["nc1"]) and np.isnan(out["nc2"])


def test_one_shot_iterator_is_refused():
    H, y, W, b = gaussian_classes(3, 4, [5] * 3)
    with pytest.raises(ValueError, match="one-shot"):
        nc_metrics_streaming(iter([(H, y)]), 3)


def test_float32_features_with_an_offset_match_float64_on_the_same_features():
    # issue 16: float32 features of magnitude 1e4 with a unit spread. Summing the class means in float32
    # moved them by ~1e-3 and NC1 by 1e-3 relative (only Σ_W was corrected); the first pass now sums in
    # float64, so every metric agrees with float64 on the same (float32-rounded) features to ~1e-8
    rng = np.random.default_rng(11)
    K, d, n = 6, 16, 1500
    y = np.repeat(np.arange(K), n)
    H64 = 3.0 * rng.normal(size=(K, d))[y] + rng.normal(size=(K * n, d))
    H32 = (H64 + 1e4).astype(np.float32)
    W = rng.normal(size=(K, d))
    b = rng.normal(size=K) - W @ np.full(d, 1e4)  # logits of the order of the spread, as for the unshifted data
    ours = nc_metrics(H32, y, W, b)
    ref = nc_metrics(H32.astype(np.float64), y, W, b)
    assert set(ours) == set(ref)
    for key, value in ref.items():
        assert np.isfinite(value), key
        assert ours[key] == pytest.approx(value, rel=1e-7, abs=1e-12), key
    for key in ("nc4", "accuracy", "ncc_accuracy", "rank_means"):  # decisions and counts: identical
        assert ours[key] == ref[key], key


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_given_logits_give_the_same_metrics(dtype):
    """nc_metrics(..., logits=HWᵀ + b) projects on the centered means alone and takes the decisions from the
    logits: every metric equals the naive reference, as without them (imbalanced classes, a bias, d < K too)."""
    for K, d, counts in ((6, 9, [5, 7, 3, 8, 6, 4]), (10, 4, [12] * 10)):
        H, y, W, b = gaussian_classes(K, d, counts, seed=K)
        H_t, W_t, b_t = (torch.as_tensor(a, dtype=dtype) for a in (H, W, b))
        logits = H_t @ W_t.T + b_t
        ours = nc_metrics(H_t, torch.as_tensor(y), W_t, b_t, logits=logits)
        assert ours == pytest.approx(nc_metrics(H_t, torch.as_tensor(y), W_t, b_t), rel=1e-6, abs=1e-9, nan_ok=True)
        assert_agree(ours, naive_nc(H, y, W, b, K))
    with pytest.raises(ValueError, match="shape"):
        nc_metrics(H_t, torch.as_tensor(y), W_t, b_t, logits=logits[:, :3])
