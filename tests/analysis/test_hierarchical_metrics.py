"""Hierarchical metrics (DESIGN §5.4) against naive loops written here."""

import numpy as np
import pytest

from analysis.frames import haframe
from analysis.hierarchical_metrics import (
    angular_collapse,
    centered_gram_distance,
    hier_dist_at_k,
    hierarchical_metrics,
    mistake_severity,
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
