"""The measures of the other NC libraries in analysis.metrics (issue 16), against naive float64 loops written
from the papers' formulas:

- CDNV (Galanti, György & Hutter 2022): V_ij = (Var_i + Var_j)/(2‖μ_i − μ_j‖²), Var_k the mean squared
  distance of class k's features to their mean; `cdnv` the mean over i < j, `cdnv_max` the max;
- Zhu et al. 2021's bias relation: v = Wμ_G + b, `bias_relation` = ‖v‖ (their code's "NC4"),
  `bias_relation_centered` = ‖v − mean(v)1‖ / (‖WMᵀ‖_F/√K);
- the variance over pairs of the distances (and of their logs) of the normalized centered means and of the
  normalized classifier rows (rhubarbwu/neural-collapse's nc2g_dist / nc2g_log, Liu et al. 2023);
- NC1 as the trace ratio tr Σ_W / tr Σ_B (`nc1_trace`, rhubarbwu's covariance_ratio "quotient") and the uniform
  duality of Wu & Papyan 2024: `nc3_uniform` the variance over classes (ddof = 1) of ⟨w_k, μ_k − μ_G⟩ (rhubarbwu's
  similarities(W, M, m_G).var()), `nc3_uniform_cos` the std/mean of the cosines cos∠(w_k, μ_k − μ_G).

Where a checkout of rhubarbwu/neural-collapse is named by UFM_PEER_NC (benchmarks/peers.py), the trace ratio, the
uniform duality and NC5 (analysis.ood) are also compared with the peer's own functions, run from that checkout.
"""

import itertools
import math
import threading

import numpy as np
import pytest
import torch

from analysis.metrics import METRIC_KEYS, gnc_metrics, nc_metrics, nc_metrics_streaming

PEER_KEYS = ("cdnv", "cdnv_max", "bias_relation", "bias_relation_centered", "distance_var_means",
             "log_distance_var_means", "distance_var_W", "log_distance_var_W", "nc1_trace", "nc3_uniform",
             "nc3_uniform_cos")


def naive_peer(H, y, W, b, K, global_mean="samples"):
    """Loops over classes and pairs, in numpy float64, straight from the definitions."""
    H = np.asarray(H, dtype=np.float64)
    mu = [H[y == k].mean(0) for k in range(K)]
    var = [np.mean([np.sum((h - mu[k]) ** 2) for h in H[y == k]]) for k in range(K)]
    V = [(var[i] + var[j]) / (2 * np.sum((mu[i] - mu[j]) ** 2)) for i, j in itertools.combinations(range(K), 2)]
    out = {"cdnv": np.mean(V), "cdnv_max": np.max(V)}
    mu_G = H.mean(0) if global_mean == "samples" else np.mean(mu, axis=0)

    def distances(rows):
        unit = [r / np.linalg.norm(r) for r in rows]
        return np.array([np.linalg.norm(unit[i] - unit[j]) for i, j in itertools.combinations(range(K), 2)])

    dist = distances([m - mu_G for m in mu])
    out["distance_var_means"], out["log_distance_var_means"] = np.var(dist), np.var(np.log(dist))
    within = sum(np.sum((h - mu[y[i]]) ** 2) for i, h in enumerate(H)) / len(H)  # tr Σ_W
    between = sum(np.sum((m - mu_G) ** 2) for m in mu) / K  # tr Σ_B
    out["nc1_trace"] = within / between
    if W is not None:
        W = np.asarray(W, dtype=np.float64)
        dist = distances(list(W))
        out["distance_var_W"], out["log_distance_var_W"] = np.var(dist), np.var(np.log(dist))
        v = np.array([W[k] @ mu_G + (0.0 if b is None else b[k]) for k in range(K)])
        out["bias_relation"] = np.sqrt(np.sum(v**2))
        logits_of_means = np.array([[W[j] @ (mu[k] - mu_G) for k in range(K)] for j in range(K)])
        rms = np.sqrt(np.sum(logits_of_means**2) / K)
        out["bias_relation_centered"] = np.sqrt(np.sum((v - v.mean()) ** 2)) / rms
        dots = [W[k] @ (mu[k] - mu_G) for k in range(K)]
        out["nc3_uniform"] = sum((t - sum(dots) / K) ** 2 for t in dots) / (K - 1)
        cos = [dots[k] / (np.linalg.norm(W[k]) * np.linalg.norm(mu[k] - mu_G)) for k in range(K)]
        mean_cos = sum(cos) / K
        out["nc3_uniform_cos"] = math.sqrt(sum((c - mean_cos) ** 2 for c in cos) / K) / mean_cos
    return out


def gaussian_classes(K, d, counts, spread=3.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), counts)
    centers = spread * rng.normal(size=(K, d))
    H = centers[y] + rng.normal(size=(len(y), d)) * rng.uniform(0.5, 2.0, size=K)[y, None]  # unequal spreads
    W = centers + 0.5 * rng.normal(size=(K, d))
    b = 0.1 * rng.normal(size=K)
    return H, y, W, b


def assert_agree(ours, ref, rel=1e-10):
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, rel=rel, abs=1e-14), key


CASES = {
    "balanced d>K": (5, 20, [30] * 5),
    "K=2": (2, 6, [25, 40]),
    "d<K": (10, 4, [12] * 10),
    "imbalanced": (6, 12, [50, 40, 30, 10, 5, 2]),
    "one-sample class": (4, 7, [20, 1, 15, 9]),
}


@pytest.mark.parametrize("global_mean", ["samples", "classes"])
@pytest.mark.parametrize("case", list(CASES))
def test_peer_measures_match_the_naive_definitions(case, global_mean):
    K, d, counts = CASES[case]
    H, y, W, b = gaussian_classes(K, d, counts)
    assert_agree(nc_metrics(H, y, W, b, global_mean=global_mean), naive_peer(H, y, W, b, K, global_mean))


def test_new_keys_are_listed():
    assert set(PEER_KEYS) <= set(METRIC_KEYS)
    H, y, W, b = gaussian_classes(3, 4, [5, 6, 7])
    assert set(nc_metrics(H, y, W, b)) == set(METRIC_KEYS)


def test_cdnv_of_two_classes_by_hand():
    # class 0: ±1 on the first axis around (0, 0) (Var = 1); class 1: one sample at (4, 0) (Var = 0)
    H = np.array([[1.0, 0.0], [-1.0, 0.0], [4.0, 0.0]])
    y = np.array([0, 0, 1])
    out = nc_metrics(H, y)
    assert out["cdnv"] == pytest.approx((1.0 + 0.0) / (2 * 16.0), rel=1e-15)
    assert out["cdnv_max"] == out["cdnv"]


def test_collapsed_features_have_zero_cdnv_and_an_etf_zero_distance_variance():
    K, d, n = 5, 8, 4
    E = np.eye(K) - np.ones((K, K)) / K
    Q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(d, d)))
    means = 2.0 * E @ Q[:K]  # a simplex ETF in R^d, centered
    y = np.repeat(np.arange(K), n)
    W = 0.7 * means  # the ETF classifier of Zhu et al.'s optimum; μ_G = 0 here
    out = nc_metrics(means[y] + 0.0, y, W, np.full(K, 0.3))
    assert out["cdnv"] == 0.0 and out["cdnv_max"] == 0.0
    for key in ("distance_var_means", "log_distance_var_means", "distance_var_W", "log_distance_var_W",
                "bias_relation_centered"):
        assert out[key] == pytest.approx(0.0, abs=1e-14), key
    # the constant bias b = 0.3·1 is all that is left of v = Wμ_G + b: ‖v‖ = 0.3·√K
    assert out["bias_relation"] == pytest.approx(0.3 * math.sqrt(K), rel=1e-12)
    # an offset of the features moves μ_G: v = W·offset + b, no longer 0 nor constant
    offset = np.random.default_rng(3).normal(size=d)
    shifted = nc_metrics(means[y] + offset, y, W, np.full(K, 0.3))
    v = W @ offset + 0.3
    assert shifted["bias_relation"] == pytest.approx(np.linalg.norm(v), rel=1e-12)
    assert shifted["distance_var_means"] == pytest.approx(0.0, abs=1e-14)  # centered means: unchanged


def test_bias_relation_needs_w_and_takes_b_zero_without_a_bias():
    H, y, W, b = gaussian_classes(4, 6, [10] * 4)
    without_w = nc_metrics(H, y)
    for key in ("bias_relation", "bias_relation_centered", "distance_var_W", "log_distance_var_W"):
        assert math.isnan(without_w[key]), key
    assert np.isfinite(without_w["cdnv"]) and np.isfinite(without_w["distance_var_means"])
    no_bias = nc_metrics(H, y, W)
    zero_bias = nc_metrics(H, y, W, np.zeros(4))
    assert no_bias["bias_relation"] == zero_bias["bias_relation"]
    assert no_bias["bias_relation_centered"] == zero_bias["bias_relation_centered"]
    assert_agree(no_bias, naive_peer(H, y, W, None, 4))


def test_coincident_means_give_an_infinite_cdnv_and_undefined_log_distances():
    H, y, W, b = gaussian_classes(3, 5, [10, 10, 10])
    H[y == 1] += H[y == 0].mean(0) - H[y == 1].mean(0)  # classes 0 and 1 share their mean
    out = nc_metrics(H, y, W, b)
    assert out["cdnv_max"] == math.inf and out["cdnv"] == math.inf
    assert math.isnan(out["log_distance_var_means"])


def test_streaming_over_batches_equals_one_shot():
    K = 5
    H, y, W, b = gaussian_classes(K, 9, [13, 27, 8, 1, 22])
    order = np.random.default_rng(4).permutation(len(y))
    batches = [(H[order[i:i + 7]], y[order[i:i + 7]]) for i in range(0, len(y), 7)]
    streamed = nc_metrics_streaming(batches, K, W, b)
    one_shot = nc_metrics(H, y, W, b)
    for key in PEER_KEYS:
        assert streamed[key] == pytest.approx(one_shot[key], rel=1e-12), key


def _sum_over_threads(parties):
    """A `reduce` for `parties` threads that each run the metrics on their shard: every call returns the sum of
    the tensors the threads pass at that call (what an all-reduce does across processes)."""
    barrier = threading.Barrier(parties, timeout=60)  # a broken barrier raises instead of hanging
    slots: list = []
    lock = threading.Lock()

    def reduce(t):
        with lock:
            slots.append(t)
        barrier.wait()
        total = sum(slots[1:], slots[0].clone())
        barrier.wait()
        with lock:
            slots.clear()
        barrier.wait()
        return total

    return reduce


def test_reduce_over_two_shards_equals_the_union():
    K = 4
    H, y, W, b = gaussian_classes(K, 10, [30, 3, 17, 12], seed=5)
    shards = [(H[::2], y[::2]), (H[1::2], y[1::2])]
    reduce = _sum_over_threads(2)
    results = [None, None]

    def run(rank):
        Hs, ys = shards[rank]
        results[rank] = nc_metrics_streaming([(Hs[:9], ys[:9]), (Hs[9:], ys[9:])], K, W, b, reduce=reduce)

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    union = nc_metrics(H, y, W, b)
    for result in results:
        assert result is not None
        for key in METRIC_KEYS:
            assert result[key] == pytest.approx(union[key], rel=1e-10, abs=1e-14, nan_ok=True), key
    assert_agree(results[0], naive_peer(H, y, W, b, K))


def test_float32_features_give_the_peer_measures_of_float64():
    rng = np.random.default_rng(6)
    K, d, n = 5, 12, 400
    y = np.repeat(np.arange(K), n)
    H32 = (1e4 + 3.0 * rng.normal(size=(K, d))[y] + rng.normal(size=(K * n, d))).astype(np.float32)
    W = rng.normal(size=(K, d))
    b = rng.normal(size=K)
    ours, ref = nc_metrics(H32, y, W, b), nc_metrics(H32.astype(np.float64), y, W, b)
    for key in PEER_KEYS:
        assert ours[key] == pytest.approx(ref[key], rel=1e-7), key


def test_gnc_distance_variances_of_the_uncentered_directions():
    H, y, W, _ = gaussian_classes(6, 5, [8] * 6, seed=7)
    H = H + 2.0  # uncentered directions differ from centered ones
    out = gnc_metrics(H, y, W, K=6)
    mu = np.stack([H[y == k].mean(0) for k in range(6)])
    unit = mu / np.linalg.norm(mu, axis=1, keepdims=True)
    dist = np.array([np.linalg.norm(unit[i] - unit[j]) for i, j in itertools.combinations(range(6), 2)])
    assert out["distance_var_means_sphere"] == pytest.approx(np.var(dist), rel=1e-10)
    assert out["log_distance_var_means_sphere"] == pytest.approx(np.var(np.log(dist)), rel=1e-10)
    ref = naive_peer(H, y, W, None, 6)
    assert out["distance_var_W"] == pytest.approx(ref["distance_var_W"], rel=1e-10)
    assert out["log_distance_var_W"] == pytest.approx(ref["log_distance_var_W"], rel=1e-10)
    assert out["distance_var_W"] == pytest.approx(nc_metrics(H, y, W)["distance_var_W"], rel=1e-12)
    # the vertices of a regular tetrahedron in R^3 (uncentered directions, equidistant): variances 0
    tetra = np.array([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    yt = np.arange(4)
    out = gnc_metrics(tetra, yt, tetra, K=4)
    for key in ("distance_var_means_sphere", "log_distance_var_means_sphere", "distance_var_W", "log_distance_var_W"):
        assert out[key] == pytest.approx(0.0, abs=1e-14), key


def test_nc1_trace_and_uniform_duality_by_hand():
    # class 0 at ±1 on the first axis around (0, 0), class 1 at (4, 0) ± 1 on the second axis: tr Σ_W = 1,
    # μ_G = (2, 0), tr Σ_B = (4 + 4)/2 = 4
    H = np.array([[1.0, 0.0], [-1.0, 0.0], [4.0, 1.0], [4.0, -1.0]])
    y = np.array([0, 0, 1, 1])
    W = np.array([[-1.0, 0.0], [3.0, 0.0]])  # ⟨w_k, μ_k − μ_G⟩ = 2 and 6: variance (ddof 1) 8; cosines 1 and 1
    out = nc_metrics(H, y, W)
    assert out["nc1_trace"] == pytest.approx(1.0 / 4.0, rel=1e-15)
    assert out["nc3_uniform"] == pytest.approx(8.0, rel=1e-15)
    assert out["nc3_uniform_cos"] == 0.0
    no_w = nc_metrics(H, y)
    assert math.isnan(no_w["nc3_uniform"]) and math.isnan(no_w["nc3_uniform_cos"])
    assert no_w["nc1_trace"] == out["nc1_trace"]
    # a row of W orthogonal to its mean: cosines 0 and 1, mean 1/2, std 1/2
    tilted = nc_metrics(H, y, np.array([[0.0, 1.0], [3.0, 0.0]]))
    assert tilted["nc3_uniform_cos"] == pytest.approx(1.0, rel=1e-15)
    assert tilted["nc3_uniform"] == pytest.approx(18.0, rel=1e-15)  # dots 0 and 6
    # a zero row has no direction: the cosine form is undefined, the inner products are not
    zero_row = nc_metrics(H, y, np.array([[0.0, 0.0], [3.0, 0.0]]))
    assert math.isnan(zero_row["nc3_uniform_cos"]) and zero_row["nc3_uniform"] == pytest.approx(18.0, rel=1e-15)


def test_nc1_trace_is_infinite_when_the_means_coincide_and_zero_when_collapsed():
    H = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # both class means at the origin
    assert nc_metrics(H, np.array([0, 0, 1, 1]))["nc1_trace"] == math.inf
    collapsed = nc_metrics(np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 0.0]]), np.array([0, 0, 1]))
    assert collapsed["nc1_trace"] == 0.0


def test_the_new_keys_from_sufficient_statistics_equal_the_two_pass_ones():
    from analysis.metrics import SufficientStats

    H, y, W, b = gaussian_classes(5, 7, [9, 14, 3, 20, 6], seed=8)
    st = SufficientStats(5, 7)
    for i in range(0, len(y), 11):
        st.add(H[i:i + 11], y[i:i + 11])
    one_pass, two_pass = st.metrics(W, b), nc_metrics(H, y, W, b)
    for key in ("nc1_trace", "nc3_uniform", "nc3_uniform_cos"):
        assert one_pass[key] == pytest.approx(two_pass[key], rel=1e-12), key


@pytest.mark.parametrize("side", ["classes", "features"])
def test_the_new_keys_on_both_sides_and_with_excluded_classes(side):
    H, y, W, b = gaussian_classes(6, 4, [10, 12, 0, 9, 11, 8], seed=9)  # class 2 has no samples
    out = nc_metrics(H, y, W, b, K=6, side=side, missing="exclude")
    present = [0, 1, 3, 4, 5]
    keep = np.isin(y, present)
    relabel = {k: i for i, k in enumerate(present)}
    ref = naive_peer(H[keep], np.array([relabel[k] for k in y[keep]]), W[present], b[present], 5)
    for key in ("nc1_trace", "nc3_uniform", "nc3_uniform_cos"):
        assert out[key] == pytest.approx(ref[key], rel=1e-11), key


# --- against the peer's own code (a checkout named by UFM_PEER_NC; skipped without one) ---


@pytest.fixture
def peer(monkeypatch):
    from benchmarks.peers import find_peer

    root = find_peer()
    if root is None:
        pytest.skip("no checkout of rhubarbwu/neural-collapse: set UFM_PEER_NC (see benchmarks/peers.py)")
    monkeypatch.syspath_prepend(str(root))
    from neural_collapse import accumulate, measure

    return accumulate, measure


def _peer_means(accumulate, H, y, K, weighted):
    """Their MeanAccumulator over two batches, in float64: the class means and their global mean (unweighted mean of
    the class means; the sample-weighted one formed from their counts and means, as benchmarks/peers.py does)."""
    acc = accumulate.MeanAccumulator(K, H.shape[1], "cpu", dtype=torch.float64)
    X, Y = torch.from_numpy(H), torch.from_numpy(y)
    acc.accumulate(X[::2], Y[::2])
    acc.accumulate(X[1::2], Y[1::2])
    means, m_G = acc.compute()
    if weighted:
        n = acc.ns_samples.double()
        m_G = (n[:, None] * means).sum(0) / n.sum()
    return means, m_G


@pytest.mark.parametrize("global_mean", ["samples", "classes"])
@pytest.mark.parametrize("case", ["balanced d>K", "d<K", "imbalanced"])
def test_trace_ratio_and_uniform_duality_agree_with_the_peer(peer, case, global_mean):
    accumulate, measure = peer
    K, d, counts = CASES[case]
    H, y, W, b = gaussian_classes(K, d, counts)
    means, m_G = _peer_means(accumulate, H, y, K, weighted=global_mean == "samples")
    covar = accumulate.CovarAccumulator(K, d, "cpu", dtype=torch.float64, M=means)
    covar.accumulate(torch.from_numpy(H), torch.from_numpy(y), means)
    theirs_nc1 = measure.covariance_ratio(covar.compute(), means, m_G, metric="quotient")
    theirs_nc3u = measure.similarities(torch.from_numpy(W), means, m_G).var().item()
    ours = nc_metrics(H, y, W, b, global_mean=global_mean)
    assert ours["nc1_trace"] == pytest.approx(theirs_nc1, rel=1e-12)
    assert ours["nc3_uniform"] == pytest.approx(theirs_nc3u, rel=1e-12)


@pytest.mark.parametrize("case", ["balanced d>K", "d<K", "imbalanced"])
def test_nc5_agrees_with_the_peer(peer, case):
    from analysis.ood import nc5

    accumulate, measure = peer
    K, d, counts = CASES[case]
    H, y, _, _ = gaussian_classes(K, d, counts)
    ood = np.random.default_rng(10).normal(size=(37, d)) + 0.5
    means, _ = _peer_means(accumulate, H, y, K, weighted=False)
    ood_acc = accumulate.MeanAccumulator(1, d, "cpu", dtype=torch.float64)  # one OOD "class": its mean is theirs
    ood_acc.accumulate(torch.from_numpy(ood), torch.zeros(len(ood), dtype=torch.int64))
    _, m_G_ood = ood_acc.compute()
    theirs = measure.orthogonality_deviation(means, m_G_ood)
    assert nc5(H, [ood[:20], ood[20:]], y) == pytest.approx(theirs, rel=1e-12)
