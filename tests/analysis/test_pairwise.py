"""analysis.pairwise: the tiled pair statistics equal their definitions over the K(K−1)/2 pairs (float64)."""

import itertools
import math

import numpy as np
import pytest
import torch

from analysis.blocked import budget
from analysis.pairwise import cdnv_pairs, cosine_pair_stats, upper_pairs


def naive_pairs(X, s):
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    c = np.array([U[i] @ U[j] for i, j in itertools.combinations(range(len(U)), 2)])
    r = np.sqrt(np.clip(2 - 2 * c, 0, None))
    energy = np.sum(-np.log(r)) if s == 0 else np.sum(r ** -s)
    K = len(U)
    return {"cos_mean": c.mean(), "cos_var": c.var(), "maxangle": np.abs(c + 1 / (K - 1)).mean(),
            "dist_var": r.var(), "log_dist_var": np.log(r).var(), "energy": energy, "min_dist": r.min()}


@pytest.mark.parametrize("tile", [None, 1, 3, 4])
@pytest.mark.parametrize("s", [0.0, 1.0, 2.5])
def test_cosine_pair_stats_equal_the_definitions(tile, s):
    X = np.random.default_rng(0).normal(size=(13, 4)) + 0.3
    st = cosine_pair_stats(torch.as_tensor(X), s, tile=tile)
    assert st.pairs == 13 * 12 // 2
    for key, value in naive_pairs(X, s).items():
        assert getattr(st, key) == pytest.approx(value, rel=1e-12), key
    assert st.min_angle == pytest.approx(2 * math.asin(naive_pairs(X, s)["min_dist"] / 2), rel=1e-12)


def test_a_small_budget_tiles_the_pairs():
    X = torch.as_tensor(np.random.default_rng(1).normal(size=(40, 3)))
    whole = cosine_pair_stats(X)
    with budget(4096):  # 4 KiB: tiles of 9 × 9 (PAIR_COPIES = 6 float64 copies)
        tiles = list(upper_pairs(40))
        tiled = cosine_pair_stats(X)
    assert len(tiles) == 15  # tiles of 9 × 9: 5 + 4 + 3 + 2 + 1
    for key in ("cos_mean", "cos_var", "maxangle", "dist_var", "log_dist_var", "energy", "min_dist"):
        assert getattr(tiled, key) == pytest.approx(getattr(whole, key), rel=1e-12), key


def test_coincident_directions_leave_the_log_variance_undefined():
    X = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    st = cosine_pair_stats(X)
    assert st.coincident and math.isnan(st.log_dist_var) and st.min_dist == pytest.approx(1e-15)


def test_cdnv_pairs_equal_the_definition():
    """(Var_i + Var_j)/(2‖μ_i − μ_j‖²) over i < j (Galanti et al. 2022), mean and max, in tiles."""
    rng = np.random.default_rng(2)
    means, var = rng.normal(size=(11, 5)), rng.uniform(0.1, 1.0, size=11)
    V = [(var[i] + var[j]) / (2 * np.sum((means[i] - means[j]) ** 2)) for i, j in itertools.combinations(range(11), 2)]
    for tile in (None, 2, 5):
        mean, top = cdnv_pairs(torch.as_tensor(var), torch.as_tensor(means), tile=tile)
        assert mean == pytest.approx(np.mean(V), rel=1e-12) and top == pytest.approx(np.max(V), rel=1e-12)


def test_metrics_under_inference_mode_and_after_an_in_place_change():
    """No cached state: the pair statistics work on inference tensors (no version counter) and follow a classifier
    changed in place (numpy or .data), which a cache keyed on tensor versions would miss."""
    from analysis.metrics import gnc_metrics, nc_metrics

    rng = np.random.default_rng(3)
    H, y = rng.normal(size=(60, 5)), np.arange(60) % 6
    W = rng.normal(size=(6, 5))
    with torch.inference_mode():
        inside = nc_metrics(torch.as_tensor(H), torch.as_tensor(y), torch.as_tensor(W))
    assert inside["equiangular_W"] == pytest.approx(nc_metrics(H, y, W)["equiangular_W"], rel=1e-12)
    before = nc_metrics(H, y, W)["equiangular_W"]
    W[:] = rng.normal(size=(6, 5))
    after = nc_metrics(H, y, W)["equiangular_W"]
    assert after != before and after == pytest.approx(naive_pairs(W, 1.0)["cos_var"] ** 0.5, rel=1e-12)
    Wt = torch.as_tensor(rng.normal(size=(6, 5)))
    first = gnc_metrics(H, y, Wt)["energy_W"]
    Wt.data.copy_(torch.as_tensor(rng.normal(size=(6, 5))))
    assert gnc_metrics(H, y, Wt)["energy_W"] == pytest.approx(naive_pairs(Wt.numpy(), 1.0)["energy"], rel=1e-12)
    assert gnc_metrics(H, y, Wt)["energy_W"] != first
