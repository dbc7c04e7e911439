"""Targets on the unit sphere (analysis.sphere): CE / label smoothing / focal with the features, the classifier or
both normalized, and the supervised contrastive loss of the normalized features. Each is held against an
independent computation written here (a naive loss evaluated on an explicit simplex ETF, a scalar problem
solved by brute force) and against float64 L-BFGS runs of the UFM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ufm
from analysis.sphere import focal_margin_derivatives, margin_loss, sphere_etf, supcon_etf
from analysis.theory import etf_gram
from ufm.config import SimConfig
from ufm.errors import ConfigError, python_names


def simplex(K: int, d: int) -> np.ndarray:
    """K unit vectors in R^d (d >= K − 1) with pairwise cosines −1/(K−1), from the ETF Gram."""
    vals, vecs = np.linalg.eigh(etf_gram(K))
    X = vecs * np.sqrt(np.clip(vals, 0, None))
    X = X[:, vals > 1e-9]
    return np.pad(X, ((0, 0), (0, d - X.shape[1])))


def naive_loss(Z: np.ndarray, y: np.ndarray, loss: str, alpha: float = 0.0, gamma: float = 0.0) -> float:
    """Mean CE / label-smoothed CE / focal loss of the logits Z, one sample at a time."""
    total = 0.0
    for z, k in zip(Z, y, strict=True):
        logp = z - np.log(np.exp(z - z.max()).sum()) - z.max()
        if loss == "ce":
            total += -logp[k]
        elif loss == "ls":
            q = np.full(len(z), alpha / len(z))
            q[k] += 1 - alpha
            total += -(q * logp).sum()
        else:
            total += -((1 - np.exp(logp[k])) ** gamma) * logp[k]
    return total / len(Z)


def brute_scale(f, lo: float, hi: float) -> float:
    """min over a scalar of f by a fine grid then golden refinement (independent of analysis.sphere's Brent)."""
    grid = np.linspace(lo, hi, 20001)
    vals = np.array([f(s) for s in grid])
    i = int(vals.argmin())
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    for _ in range(200):
        m1, m2 = a + (b - a) * 0.382, a + (b - a) * 0.618
        a, b = (a, m2) if f(m1) < f(m2) else (m1, b)
    return f((a + b) / 2)


def run(**kw):
    K = kw.get("K", 4)
    cfg = SimConfig.from_dict({"n": 3, "d": K + 2, "optimizer": "lbfgs", "dtype": "float64", "steps": 2000, **kw})
    return ufm.run(cfg, progress=False).summary


def test_focal_margin_derivatives_match_finite_differences():
    u = np.linspace(-6, 9, 31)
    for K, g in [(2, 0.0), (4, 2.0), (10, 5.0), (3, 0.5)]:
        f = lambda x, K=K, g=g: np.array([margin_loss(t, K, "focal", gamma=g) for t in x])  # noqa: E731
        d1, d2 = focal_margin_derivatives(u, K, g)
        h = 1e-4
        np.testing.assert_allclose(d1, (f(u + h) - f(u - h)) / (2 * h), atol=1e-8)
        np.testing.assert_allclose(d2, (f(u + h) - 2 * f(u) + f(u - h)) / h**2, atol=2e-6)


@pytest.mark.parametrize("loss,alpha,gamma", [("ce", 0, 0), ("ls", 0.2, 0), ("focal", 0, 2.0)])
def test_margin_loss_is_the_loss_of_equal_wrong_logits(loss, alpha, gamma):
    K, u = 5, 1.7
    z = np.array([[u, 0, 0, 0, 0.0]])
    assert margin_loss(u, K, loss, alpha, gamma) == pytest.approx(naive_loss(z, np.array([0]), loss, alpha, gamma),
                                                                  rel=1e-13)


@pytest.mark.parametrize("K,tau", [(3, 1.0), (4, 0.5), (6, 0.2)])
def test_both_normalized_value_is_the_etf_loss(K, tau):
    """Graf et al. 2021 / Lu & Steinerberger 2022: both blocks on the sphere, CE, the ETF with ĥ = ŵ_y."""
    E = simplex(K, K + 1)
    y = np.repeat(np.arange(K), 3)
    Z = E[y] @ E.T / tau
    t = sphere_etf(K, 3, K + 1, tau, "both")
    assert t.predicted["loss"] == pytest.approx(naive_loss(Z, y, "ce"), rel=1e-13)


@pytest.mark.parametrize("mode,loss,K,tau,lam", [
    ("features", "ce", 4, 0.5, 1e-2), ("features", "ce", 2, 1.0, 1e-3), ("features", "ls", 5, 0.3, 5e-3),
    ("classifier", "ce", 4, 0.5, 1e-2), ("classifier", "ls", 3, 1.0, 2e-3), ("classifier", "ce", 6, 2.0, 1e-4),
])
def test_one_block_normalized_scale_problem_and_run(mode, loss, K, tau, lam):
    """Our derivation (analysis.sphere): with one block on the sphere the ETF is optimal and its scale solves a
    convex scalar problem; here the scalar problem is solved by brute force on the naive loss of an explicit ETF,
    and a float64 run ends at the value."""
    n, alpha = 3, 0.1 if loss == "ls" else 0.0
    E = simplex(K, K + 2)
    y = np.repeat(np.arange(K), n)
    if mode == "features":  # W = a·E, features ĥ = E_y: F = ℓ + λ_W/2·K·a²
        f = lambda a: naive_loss(E[y] @ (a * E).T / tau, y, loss, alpha) + lam / 2 * K * a * a  # noqa: E731
    else:  # H = β·E_y, Ŵ = E: F = ℓ + λ_H/2·N·β²
        f = lambda b: naive_loss(b * E[y] @ E.T / tau, y, loss, alpha) + lam / 2 * K * n * b * b  # noqa: E731
    expected = brute_scale(f, 0.0, 40.0)
    wd = {"wd_W": lam, "wd_H": 0.0} if mode == "features" else {"wd_H": lam, "wd_W": 0.0}
    s = run(K=K, loss=loss, normalize=mode, temperature=tau, smoothing=alpha or 0.1, **wd)
    assert s["theory"]["name"] == "sphere_etf" and s["theory"]["applies"], s["theory"]
    assert s["theory"]["predicted"]["loss"] == pytest.approx(expected, rel=1e-10)
    assert s["final"]["loss"] == pytest.approx(expected, rel=1e-8)
    assert s["final"]["nc1"] < 1e-8 and s["final"]["nc2"] < 1e-6
    key = "W_norm_sq" if mode == "features" else "H_norm_sq"
    assert s["rel_gap"][key] < 1e-5


def test_label_smoothing_on_the_sphere_tilts_out_of_the_etf_when_d_allows():
    """LS's margin loss is smallest at u* = log((K − α(K−1))/α): with a small τ the ETF's margin K/((K−1)τ)
    exceeds it, and with d >= K the optimum tilts every feature out of the ETF's span to margin u*, below the
    ETF's own value; with d = K − 1 no optimum is claimed."""
    K, tau, alpha = 4, 0.2, 0.3
    u_star = math.log((K - alpha * (K - 1)) / alpha)
    c = K / ((K - 1) * tau)
    assert u_star < c
    s = run(K=K, d=K + 1, loss="ls", smoothing=alpha, normalize="both", temperature=tau)
    assert s["theory"]["applies"] and s["theory"]["predicted"]["loss"] == pytest.approx(
        margin_loss(u_star, K, "ls", alpha), rel=1e-14)
    assert s["final"]["loss"] == pytest.approx(s["theory"]["predicted"]["loss"], rel=1e-9)
    assert s["final"]["loss"] < margin_loss(c, K, "ls", alpha) - 1e-3  # strictly below the ETF itself
    assert not sphere_etf(K, 3, K - 1, tau, "both", "ls", smoothing=alpha).applies


def test_focal_on_the_sphere_only_with_both_blocks():
    K, tau, gamma = 4, 0.5, 2.0
    s = run(K=K, loss="focal", focal_gamma=gamma, normalize="both", temperature=tau)
    assert s["theory"]["applies"]
    assert s["final"]["loss"] == pytest.approx(margin_loss(K / ((K - 1) * tau), K, "focal", gamma=gamma), rel=1e-9)
    t = sphere_etf(K, 3, 6, tau, "features", "focal", wd_W=1e-2, gamma=gamma)
    assert not t.applies and "not convex" in t.reason


def naive_supcon(F: np.ndarray, y: np.ndarray, tau: float) -> float:
    """Khosla et al. 2020 (L_out), one anchor and one positive at a time."""
    F = F / np.linalg.norm(F, axis=1, keepdims=True)
    losses = []
    for i in range(len(F)):
        others = [a for a in range(len(F)) if a != i]
        denom = sum(math.exp(F[i] @ F[a] / tau) for a in others)
        pos = [p for p in others if y[p] == y[i]]
        losses.append(-sum(math.log(math.exp(F[i] @ F[p] / tau) / denom) for p in pos) / len(pos))
    return sum(losses) / len(losses)


def test_supcon_loss_matches_the_naive_definition():
    g = torch.Generator().manual_seed(3)
    H = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    from ufm.losses import LossOptions, supcon

    got = float(supcon(None, y, LossOptions(temperature=0.3), features=H))
    assert got == pytest.approx(naive_supcon(H.numpy(), y.numpy(), 0.3), rel=1e-13)


@pytest.mark.parametrize("K,n,tau", [(2, 3, 1.0), (4, 3, 0.5), (5, 2, 0.1), (4, 4, 2.0)])
def test_supcon_ends_at_the_simplex_etf(K, n, tau):
    """Graf et al. 2021: balanced SupCon on the sphere is minimized by collapse onto a simplex ETF."""
    y = np.repeat(np.arange(K), n)
    expected = naive_supcon(simplex(K, K + 2)[y], y, tau)
    assert supcon_etf(K, n, K + 2, tau).predicted["loss"] == pytest.approx(expected, rel=1e-12)
    for seed in (0, 1):  # two random starts end at the same value, never below
        s = run(K=K, n=n, loss="supcon", temperature=tau, seed=seed)
        assert s["theory"]["name"] == "supcon_etf"
        assert s["final"]["loss"] == pytest.approx(expected, rel=1e-9)
        assert s["final"]["nc1"] < 1e-10 and s["final"]["nc2"] < 1e-6 and s["final"]["accuracy"] == 1.0


def test_supcon_configuration():
    cfg = SimConfig(K=3, n=4, d=5, loss="supcon")
    assert cfg.normalize == "features" and cfg.wd_H == 0 and cfg.fixed_classifier
    for kwargs, message in [(dict(n=1), "at least 2 samples"), (dict(bias=True), "use --no-bias"),
                            (dict(normalize="both"), "--normalize must be features"),
                            (dict(wd=1e-3), "--wd-H would only shrink"),
                            (dict(n=5000), "similarity matrix")]:
        with pytest.raises(ConfigError, match=python_names(message)):
            SimConfig(**{"K": 3, "n": 4, "d": 5, "loss": "supcon", **kwargs})
    assert not supcon_etf(6, 3, 3, 1.0).applies  # K > d + 1: a spherical code, no ETF
