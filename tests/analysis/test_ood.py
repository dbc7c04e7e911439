"""analysis.ood.nc5 (NC5 of Ammar et al. 2024, NECO eq. 5) against a naive float64 loop over the classes:
(1/K) Σ_k |⟨μ_k, μ_G^OOD⟩| / (‖μ_k‖ ‖μ_G^OOD‖), μ_k the uncentered ID class means, μ_G^OOD the mean of the OOD
features. (The comparison with rhubarbwu/neural-collapse's orthogonality_deviation is in test_peer_metrics.py.)"""

import math

import numpy as np
import pytest
import torch

from analysis import nc5
from analysis.metrics import class_means
from analysis.ood import feature_mean


def naive_nc5(means, ood):
    means = np.asarray(means, dtype=np.float64)
    g = np.asarray(ood, dtype=np.float64).mean(0)
    return sum(abs(m @ g) / (np.linalg.norm(m) * np.linalg.norm(g)) for m in means) / len(means)


def data(seed=0, K=5, d=8):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), [6, 9, 4, 11, 7][:K])
    H = 2.0 + 3 * rng.normal(size=(K, d))[y] + rng.normal(size=(len(y), d))
    ood = rng.normal(size=(53, d)) - 1.0
    return H, y, ood


def test_nc5_matches_the_formula_from_means_or_features():
    H, y, ood = data()
    means = np.stack([H[y == k].mean(0) for k in range(5)])
    ref = naive_nc5(means, ood)
    assert nc5(means, ood) == pytest.approx(ref, rel=1e-13)
    assert nc5(H, ood, y) == pytest.approx(ref, rel=1e-13)
    assert nc5(torch.from_numpy(H).float(), torch.from_numpy(ood).float(), torch.from_numpy(y)) == pytest.approx(
        ref, rel=1e-6)
    assert nc5(class_means(H, y, 5), ood) == pytest.approx(ref, rel=1e-13)


def test_batches_give_the_mean_of_them_all():
    H, y, ood = data(1)
    means = class_means(H, y, 5)
    ref = naive_nc5(means, ood)
    batches = [ood[i:i + 10] for i in range(0, len(ood), 10)]  # unequal last batch
    assert nc5(means, batches) == pytest.approx(ref, rel=1e-13)
    assert nc5(means, iter(batches)) == pytest.approx(ref, rel=1e-13)  # a one-shot iterator: one pass suffices
    loader = [(torch.from_numpy(b), torch.zeros(len(b), dtype=torch.int64)) for b in batches]  # (features, labels)
    assert nc5(means, loader) == pytest.approx(ref, rel=1e-13)
    assert nc5(means, ood.tolist()) == pytest.approx(ref, rel=1e-13)  # a nested list is one matrix
    np.testing.assert_allclose(feature_mean(batches).numpy(), ood.mean(0), rtol=1e-14)


def test_reduce_sums_the_ood_statistics_of_the_shards():
    H, y, ood = data(2)
    means = class_means(H, y, 5)
    other = ood[30:]
    theirs = torch.cat([torch.from_numpy(other.sum(0)), torch.tensor([float(len(other))], dtype=torch.float64)])
    assert nc5(means, ood[:30], reduce=lambda t: t + theirs) == pytest.approx(naive_nc5(means, ood), rel=1e-13)


def test_orthogonal_and_aligned_extremes():
    means = np.array([[1.0, 0.0, 0.0], [0.0, -2.0, 0.0]])
    assert nc5(means, [[0.0, 0.0, 1.0], [0.0, 0.0, 5.0]]) == 0.0
    assert nc5(means[:1], [[-3.0, 0.0, 0.0]]) == 1.0  # anti-parallel counts as aligned: the absolute cosine


def test_undefined_and_bad_input():
    means = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert math.isnan(nc5(means, [[1.0, 1.0], [-1.0, -1.0]]))  # OOD mean 0: no direction
    assert math.isnan(nc5(np.array([[0.0, 0.0], [0.0, 1.0]]), [[1.0, 1.0]]))  # a class mean at 0
    assert math.isnan(nc5(means, [[math.nan, 1.0]]))
    with pytest.raises(ValueError, match="means have d = 2 features but ood has 3"):
        nc5(means, [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="ood batches must share the feature dimension"):
        nc5(means, [np.ones((2, 2)), np.ones((2, 3))])
    with pytest.raises(ValueError, match="ood holds no batches"):
        nc5(means, [])
    with pytest.raises(ValueError, match="ood holds no samples"):
        nc5(means, np.zeros((0, 2)))
    with pytest.raises(TypeError, match="ood must be a matrix"):
        nc5(means, 3.0)
    with pytest.raises(ValueError, match="K is the number of classes"):
        nc5(means, [[1.0, 1.0]], K=2)
    with pytest.raises(ValueError, match=r"means must be \(K, d\)"):
        nc5([1.0, 2.0], [[1.0, 1.0]])
