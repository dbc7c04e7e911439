"""The two sides of analysis.metrics (DESIGN §8): the K×K route (projections on the centered means) and the d×d
route (Σ_W and MᵀM, NC2/NC3 from tr(XᵀX·YᵀY) identities, decisions in blocks, pairs in tiles) give the same
metrics in float64, and both equal the definitions of Papyan, Han & Donoho (2020) (the naive reference of
test_metrics); classes without samples are excluded on request."""

import math

import numpy as np
import pytest
import torch

from analysis.blocked import budget
from analysis.metrics import METRIC_KEYS, nc_metrics, nc_metrics_streaming
from tests.analysis.test_metrics import RTOL, gaussian_classes, naive_nc

CASES = {
    "K > d": (12, 5, [15] * 12),
    "K < d": (5, 20, [30] * 5),
    "K > d imbalanced": (9, 4, [40, 3, 22, 31, 8, 17, 2, 26, 13]),
    "K = 2": (2, 3, [7, 45]),
    "K = d": (6, 6, [10, 11, 12, 13, 14, 15]),
}


def agree(a, b, rel=1e-10):
    for key in METRIC_KEYS:
        x, y = a[key], b[key]
        if math.isnan(y):
            assert math.isnan(x), key
        else:
            assert x == pytest.approx(y, rel=rel, abs=1e-13), key


@pytest.mark.parametrize("global_mean", ["samples", "classes"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_two_sides_agree_to_1e_10(case, global_mean):
    """Every metric of the K×K and the d×d route agrees to 1e-10 (float64), with W and b, both global means."""
    K, d, counts = CASES[case]
    H, y, W, b = gaussian_classes(K, d, counts, seed=K + d)
    by_classes = nc_metrics(H, y, W, b, side="classes", global_mean=global_mean, rtol=RTOL)
    by_features = nc_metrics(H, y, W, b, side="features", global_mean=global_mean, rtol=RTOL)
    agree(by_features, by_classes)
    assert by_features["nc4"] == by_classes["nc4"] and by_features["accuracy"] == by_classes["accuracy"]
    # and both are the definitions (a d×d pseudo-inverse, N×K distances)
    naive = naive_nc(H, y, W, b, K, global_mean)
    for key, value in naive.items():
        assert by_features[key] == pytest.approx(value, rel=1e-8, abs=1e-12), key


def test_auto_takes_the_smaller_side():
    H, y, W, b = gaussian_classes(12, 5, [15] * 12)
    assert nc_metrics(H, y, W, b) == nc_metrics(H, y, W, b, side="features")
    H, y, W, b = gaussian_classes(5, 12, [15] * 5)
    assert nc_metrics(H, y, W, b) == nc_metrics(H, y, W, b, side="classes")


def test_a_tiny_memory_budget_gives_the_same_numbers():
    """With a 4 KiB budget the decisions run one or two rows at a time and the pairs in 2×2 tiles: the same
    metrics as with one block (float64, to 1e-12; the decisions identical)."""
    K, d, counts = CASES["K > d imbalanced"]
    H, y, W, b = gaussian_classes(K, d, counts, seed=3)
    for side in ("classes", "features"):
        whole = nc_metrics(H, y, W, b, side=side)
        with budget(4096):
            blocked = nc_metrics(H, y, W, b, side=side)
        agree(blocked, whole, rel=1e-12)
        assert blocked["nc4"] == whole["nc4"]


def test_streaming_on_the_features_side_equals_in_memory():
    K, d, counts = CASES["K > d imbalanced"]
    H, y, W, b = gaussian_classes(K, d, counts, seed=5)
    order = np.random.default_rng(0).permutation(len(y))
    batches = [(H[order[i:i + 19]], y[order[i:i + 19]]) for i in range(0, len(y), 19)]
    agree(nc_metrics_streaming(batches, K, W, b, side="features"), nc_metrics(H, y, W, b, side="features"))


def test_float32_features_on_the_features_side():
    """float32 features with an offset of 1e3: the d×d route centers in float64, so the metrics match float64 on
    the same (float32-rounded) features to ~1e-6 and every decision is the same."""
    rng = np.random.default_rng(2)
    K, d, n = 16, 6, 200
    y = np.repeat(np.arange(K), n)
    H32 = (1e3 + 3 * rng.normal(size=(K, d))[y] + rng.normal(size=(K * n, d))).astype(np.float32)
    W = rng.normal(size=(K, d))
    b = -W @ np.full(d, 1e3)
    ours = nc_metrics(H32, y, W, b, side="features")
    ref = nc_metrics(H32.astype(np.float64), y, W, b, side="features")
    for key in ("nc1", "nc2", "nc3", "tr_sigma_W", "cdnv"):
        assert ours[key] == pytest.approx(ref[key], rel=1e-5), key
    for key in ("nc4", "accuracy", "ncc_accuracy"):
        assert ours[key] == ref[key], key


@pytest.mark.parametrize("side", ["classes", "features"])
def test_missing_classes_are_excluded_on_request(side):
    """missing="exclude": the metrics of the classes present (means, NC1–NC3, the W rows they pair with), the
    classifier deciding among all K; `excluded_classes` counts the others. The default raises."""
    K, d = 8, 5 if side == "features" else 12
    H, y, W, b = gaussian_classes(K, d, [20] * K, seed=1)
    keep = ~np.isin(y, [2, 6])
    H2, y2 = H[keep], y[keep]
    with pytest.raises(ValueError, match="without samples: \\[2, 6\\]"):
        nc_metrics(H2, y2, W, b, K=K, side=side)
    out = nc_metrics(H2, y2, W, b, K=K, side=side, missing="exclude")
    assert out["excluded_classes"] == 2.0
    present = np.array([k for k in range(K) if k not in (2, 6)])
    relabel = np.searchsorted(present, y2)
    sub = nc_metrics(H2, relabel, W[present], b[present], side=side)  # the six classes on their own
    for key in ("nc1", "nc2", "nc3", "nc2_W", "self_duality", "tr_sigma_W", "tr_sigma_B", "cdnv", "equiangular_W",
                "ncc_accuracy", "bias_relation"):
        assert out[key] == pytest.approx(sub[key], rel=1e-12), key
    # the classifier still chooses among all K classes
    predicted = np.argmax(H2 @ W.T + b, axis=1)
    assert out["accuracy"] == pytest.approx(np.mean(predicted == y2))


def test_predictions_instead_of_logits():
    K, d, counts = CASES["K > d"]
    H, y, W, b = gaussian_classes(K, d, counts, seed=9)
    logits = torch.as_tensor(H @ W.T + b)
    a = nc_metrics(H, y, W, b, logits=logits)
    c = nc_metrics(H, y, W, b, predictions=logits.argmax(1))
    assert a == c
    agree(c, nc_metrics(H, y, W, b))


def test_without_the_pairs_the_other_metrics_are_unchanged():
    """pairwise=False leaves out the K(K−1)/2-pair statistics (NaN) and changes no other number."""
    K, d, counts = CASES["K > d imbalanced"]
    H, y, W, b = gaussian_classes(K, d, counts, seed=2)
    full, lean = nc_metrics(H, y, W, b), nc_metrics(H, y, W, b, pairwise=False)
    pair_keys = {"cdnv", "cdnv_max"} | {f"{stat}_{who}" for stat in ("equiangular", "maxangle", "distance_var",
                                                                         "log_distance_var") for who in ("means", "W")}
    for key in METRIC_KEYS:
        if key in pair_keys:
            assert math.isnan(lean[key]), key
        else:
            assert lean[key] == full[key], key
