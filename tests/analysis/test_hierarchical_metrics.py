"""Hierarchical metrics (DESIGN §5.4) against naive loops written here."""

import numpy as np
import pytest
import torch

from analysis.frames import haframe
from analysis.hierarchical_metrics import (
    DEFAULT_KS,
    angular_collapse,
    angular_std_signed,
    best_hier_dist_at_k,
    centered_gram_distance,
    hier_dist_at_k,
    hier_precision_at_k,
    hierarchical_metrics,
    mean_geometry_metrics,
    mistake_severity,
    prediction_metrics,
    prediction_sums,
    ranking,
)
from analysis.hierarchy import load


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    D = load("balanced:2,3,2").lca_heights
    Z = rng.standard_normal((200, 12))
    y = rng.integers(0, 12, 200)
    return Z, y, D


def test_mistake_severity_and_hierdist_against_loops(data):
    Z, y, D = data
    mistakes = [D[t, np.argmax(z)] for z, t in zip(Z, y, strict=True) if np.argmax(z) != t]
    assert mistake_severity(Z, y, D) == pytest.approx(np.mean(mistakes), rel=1e-14)
    got = hier_dist_at_k(Z, y, D, ks=(1, 5, 20))
    for k in (1, 5, 20):
        kk = min(k, 12)
        naive = np.mean([np.mean([D[t, j] for j in np.argsort(-z)[:kk]]) for z, t in zip(Z, y, strict=True)])
        assert got[k] == pytest.approx(naive, rel=1e-14)
    assert np.isnan(mistake_severity(np.eye(3), np.arange(3), D[:3, :3]))


def test_angular_collapse_against_loops_and_zero_on_the_frame(data):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((12, 20))
    S = haframe(data[2], 2.0).S
    errs = [abs(X[i] @ X[j] / np.linalg.norm(X[i]) / np.linalg.norm(X[j]) - S[i, j])
            for i in range(12) for j in range(i + 1, 12)]
    mean, std = angular_collapse(X, S)
    assert mean == pytest.approx(np.mean(errs), rel=1e-13) and std == pytest.approx(np.std(errs), rel=1e-12)
    W = haframe(data[2], 2.0, d=20).W
    assert angular_collapse(3.0 * W, S)[0] < 1e-13  # scale-free
    assert centered_gram_distance(4.0 * W @ W.T, S) < 1e-13


def test_hierarchical_metrics_on_features_collapsed_onto_the_frame():
    D = load("balanced:2,3").lca_heights
    frame = haframe(D, 2.0, d=8)
    y = np.repeat(np.arange(6), 4)
    H = 2.0 * frame.W[y]
    m = hierarchical_metrics(H, y, D, frame.W, S=frame.S)
    assert m["accuracy"] == 1.0 and np.isnan(m["mistake_severity"])
    assert m["angular_mean"] < 1e-12 and m["angular_mean_W"] < 1e-12 and m["hier_nc2"] < 1e-12
    assert m["hier_dist@1"] == 0.0
    assert m["best_hier_dist@5"] == 0.0 and m["hier_precision@1"] == 1.0 and m["hier_precision@20"] == 1.0
    assert m["angular_std_signed"] < 1e-12 and m["angular_std_signed_W"] < 1e-12


# --- one ranking for every measure, and the peers' measures (issue 16) -------------------------------------
def naive_ranking(z, k):
    """The k most likely classes: logit descending, ties to the smaller class index."""
    return sorted(range(len(z)), key=lambda j: (-z[j], j))[:k]


def naive_measures(Z, y, D, ks):
    """Every prediction measure from its definition, sample by sample (Bertinetto et al. 2020 and their code,
    better_mistakes/model/run_xent.py: hdist_avg, hdist_top, hprecision with the samples' own best rows)."""
    Z, y, D = np.asarray(Z, dtype=np.float64), np.asarray(y), np.asarray(D, dtype=np.float64)
    K = D.shape[0]
    d_max = D.max()
    top1 = [naive_ranking(z, 1)[0] for z in Z]
    mistakes = [D[t, p] for t, p in zip(y, top1, strict=True) if p != t]
    out = {"accuracy": np.mean([p == t for t, p in zip(y, top1, strict=True)]),
           "mistake_severity": np.mean(mistakes) if mistakes else np.nan}
    for k in ks:
        kk = min(k, K)
        dists = [[D[t, j] for j in naive_ranking(z, kk)] for z, t in zip(Z, y, strict=True)]
        out[f"hier_dist@{k}"] = np.mean([np.mean(d) for d in dists])
        out[f"best_hier_dist@{k}"] = np.mean([min(d) for d in dists])
        reached = sum(1 - d / d_max for row in dists for d in row)
        best = sum(np.sort(1 - D[t] / d_max)[::-1][:kk].sum() for t in y)
        out[f"hier_precision@{k}"] = reached / best
    return out


def _assert_measures(got, want, rel=1e-12):
    assert set(want) <= set(got)
    for key, v in want.items():
        if np.isnan(v):
            assert np.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(v, rel=rel, abs=1e-14), key


def test_prediction_measures_against_the_definitions(data):
    Z, y, D = data
    ks = (1, 2, 5, 12, 20)
    _assert_measures(prediction_metrics(prediction_sums(Z, y, D, ks), ks), naive_measures(Z, y, D, ks))
    assert best_hier_dist_at_k(Z, y, D, ks)[20] == 0.0  # k >= K: the truth is always among the guesses
    assert hier_precision_at_k(Z, y, D, ks)[12] == 1.0  # k = K: every class guessed, exactly 1


def test_all_zero_logits_on_cifar100_give_one_consistent_top1():
    """Issue 16: argmax (accuracy, severity) and topk (HierDist@1) used to break ties differently, 3.54
    against 3.99. Now the top-1 of every measure is class 0, the first maximal index."""
    D = load("cifar100").lca_heights
    y = np.repeat(np.arange(100), 3)
    Z = np.zeros((300, 100))
    m = prediction_metrics(prediction_sums(Z, y, D, DEFAULT_KS), DEFAULT_KS)
    assert m["accuracy"] == pytest.approx(0.01, abs=1e-15)
    assert m["hier_dist@1"] == pytest.approx(D[:, 0].mean(), rel=1e-15)
    assert m["hier_dist@1"] == pytest.approx(3.99, rel=1e-15)
    assert m["hier_dist@1"] == pytest.approx((1 - m["accuracy"]) * m["mistake_severity"], rel=1e-14)
    assert m["best_hier_dist@1"] == m["hier_dist@1"]
    _assert_measures(m, naive_measures(Z, y, D, DEFAULT_KS))


@pytest.mark.parametrize("spec", ["balanced:2,3,2", "tiered_imagenet_h", "flat:2"])
def test_random_ties_agree_with_the_definitions_and_do_not_depend_on_the_other_ks(spec):
    D = load(spec).lca_heights
    K = len(D)
    rng = np.random.default_rng(3)
    N = 120 if K > 100 else 400
    Z = rng.integers(0, 3, (N, K)).astype(np.float64)  # three values: ties everywhere, at every rank
    Z[:10] = 0.0  # and rows tied throughout
    y = rng.integers(0, K, N)
    ks = (1, 2, 5, 20, 1000)
    m = prediction_metrics(prediction_sums(Z, y, D, ks), ks)
    _assert_measures(m, naive_measures(Z, y, D, ks))
    assert m["hier_dist@1"] == pytest.approx((1 - m["accuracy"]) * m["mistake_severity"], rel=1e-14)
    assert m["best_hier_dist@1"] == m["hier_dist@1"]
    for k in ks:  # each k alone gives what it gives among the others
        alone = prediction_metrics(prediction_sums(Z, y, D, (k,)), (k,))
        for key in ("hier_dist", "best_hier_dist", "hier_precision"):
            assert alone[f"{key}@{k}"] == m[f"{key}@{k}"]
    assert hier_dist_at_k(Z, y, D, ks=(1,))[1] == hier_dist_at_k(Z, y, D, ks=(20, 5, 1))[1]


def test_two_classes():
    """K = 2 (flat:2, d = 1 off the diagonal): HierDist@1 = error, precision@1 = accuracy; k = 2 guesses both."""
    D = load("flat:2").lca_heights
    Z = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5], [2.0, -1.0]])
    y = np.array([0, 0, 1, 0, 1])
    m = prediction_metrics(prediction_sums(Z, y, D, (1, 2, 5)), (1, 2, 5))
    assert m["accuracy"] == 0.4 and m["mistake_severity"] == 1.0  # ties go to class 0
    assert m["hier_dist@1"] == pytest.approx(0.6) and m["hier_precision@1"] == pytest.approx(0.4)
    assert m["hier_dist@2"] == 0.5 and m["best_hier_dist@2"] == 0.0 and m["hier_precision@2"] == 1.0
    assert m["hier_dist@5"] == m["hier_dist@2"] and m["hier_precision@5"] == 1.0  # k > K: clipped


def test_hier_precision_equals_the_authors_ratio_on_a_batch_holding_each_class_once():
    """Bertinetto et al.'s code divides by the best similarities summed over all K classes' rows; on a batch
    holding every class once that is our denominator (the samples' own rows)."""
    D = load("tiered_imagenet_h").lca_heights
    K = len(D)
    rng = np.random.default_rng(4)
    y = rng.permutation(K)
    Z = rng.standard_normal((K, K))
    S = 1 - D / D.max()
    best_all = np.sort(S, axis=1)[:, ::-1]  # _make_best_hier_similarities
    for k in (1, 5, 20):
        top = np.argsort(-Z, axis=1, kind="stable")[:, :k]
        authors = S[y[:, None], top].sum() / best_all[:, :k].sum()
        assert hier_precision_at_k(Z, y, D, (k,))[k] == pytest.approx(authors, rel=1e-12)


def test_ranking_is_a_stable_sort_and_its_first_column_is_argmax():
    rng = np.random.default_rng(5)
    Z = torch.tensor(rng.integers(0, 4, (300, 50)), dtype=torch.float32)
    Z[0] = 0.0
    Z[1, 7] = float("inf")
    full = torch.sort(Z, dim=1, descending=True, stable=True).indices
    for k in (1, 3, 10, 49, 50, 80):
        np.testing.assert_array_equal(ranking(Z, k).numpy(), full[:, :k].numpy())
    np.testing.assert_array_equal(ranking(Z, 1)[:, 0].numpy(), Z.argmax(1).numpy())
    Zc = torch.tensor(rng.standard_normal((200, 40)))  # no ties: the fast path alone
    np.testing.assert_array_equal(ranking(Zc, 5).numpy(), np.argsort(-Zc.numpy(), axis=1)[:, :5])
    assert ranking(np.zeros((0, 6)), 3).shape == (0, 3)


def test_prediction_sums_of_batches_add_up_to_the_whole_with_the_new_measures(data):
    Z, y, D = data
    ks = (1, 5, 20)
    whole = prediction_metrics(prediction_sums(Z, y, D, ks), ks)
    parts = prediction_sums(Z[:7], y[:7], D, ks) + prediction_sums(Z[7:], y[7:], D, ks)
    _assert_measures(prediction_metrics(parts, ks), whole, rel=1e-14)


def test_signed_angular_std_beside_the_absolute_one(data):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((12, 20))
    S = haframe(data[2], 2.0).S
    signed = [X[i] @ X[j] / np.linalg.norm(X[i]) / np.linalg.norm(X[j]) - S[i, j]
              for i in range(12) for j in range(i + 1, 12)]
    assert angular_std_signed(X, S) == pytest.approx(np.std(signed), rel=1e-12)  # HAFrame's np.std(cos − S)
    W = rng.standard_normal((12, 20))
    m = mean_geometry_metrics(X, S, W)
    assert m["angular_std_signed"] == pytest.approx(np.std(signed), rel=1e-12)
    assert m["angular_std"] == pytest.approx(np.std(np.abs(signed)), rel=1e-12)  # the old key is unchanged
    assert m["angular_std_signed_W"] == pytest.approx(angular_std_signed(W, S), rel=1e-14)
    # Papyan's equiangularity: with the simplex ETF's S_ij = −1/(K − 1), the std of the cosines themselves
    etf = np.full((12, 12), -1 / 11) + np.eye(12) * (1 + 1 / 11)
    assert angular_std_signed(X, etf) == pytest.approx(np.std(np.array(signed) + S[np.triu_indices(12, 1)]),
                                                       rel=1e-12)


def test_measures_follow_the_trees_lca_convention():
    """The metrics read whatever matrix they get: tieredImageNet-H's default (12 − depth(LCA)) gives larger
    severities than the old convention on the same predictions."""
    t = load("tiered_imagenet_h")
    old = t.with_lca_distance("max_leaf_distance")
    rng = np.random.default_rng(7)
    Z = rng.standard_normal((300, t.K))
    y = rng.integers(0, t.K, 300)
    new_m = prediction_metrics(prediction_sums(Z, y, t.lca_heights, (1, 5)), (1, 5))
    old_m = prediction_metrics(prediction_sums(Z, y, old.lca_heights, (1, 5)), (1, 5))
    _assert_measures(new_m, naive_measures(Z, y, t.lca_heights, (1, 5)))
    assert new_m["accuracy"] == old_m["accuracy"] and new_m["mistake_severity"] > old_m["mistake_severity"]


def test_hierarchical_metrics_take_given_logits():
    """Given logits HWᵀ + b, the prediction measures are those computed from H and W (no second product)."""
    rng = np.random.default_rng(3)
    tree = load("balanced:2,3,2")
    H, W, b = rng.standard_normal((120, 5)), rng.standard_normal((12, 5)), rng.standard_normal(12)
    y = rng.integers(0, 12, 120)
    plain = hierarchical_metrics(H, y, tree.lca_heights, W, b, K=12)
    given = hierarchical_metrics(H, y, tree.lca_heights, W, b, K=12, logits=H @ W.T + b)
    assert given == pytest.approx(plain, rel=1e-12, nan_ok=True) and set(given) == set(plain)
    with pytest.raises(ValueError, match="shape"):
        hierarchical_metrics(H, y, tree.lca_heights, W, b, K=12, logits=(H @ W.T)[:10])
