"""HXE, soft labels and HAFrame (DESIGN §5.3) against naive per-sample references written here."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis.frames import haframe
from analysis.hierarchy import from_nested, load
from ufm.config import ConfigError, SimConfig
from ufm.losses import LOSSES, LossOptions, hierarchy_data
from ufm.problem import resolve

UNEVEN = from_nested({"name": "r", "children": [
    {"name": "x", "children": [{"name": "y", "children": [{"name": "a"}, {"name": "b"}]}, {"name": "c"}]},
    {"name": "z", "children": [{"name": "d"}, {"name": "e"}, {"name": "f"}]},
]})


def _batch(K, N=64, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, K, generator=g, dtype=torch.float64) * scale, torch.randint(0, K, (N,), generator=g)


def naive_hxe(Z, y, tree, alpha, weighting):
    """−Σ_{C on y's path} λ(C)·log(p(C)/p(parent C)) with p(node) = Σ of the softmax over its classes."""
    P = torch.softmax(Z, 1).numpy()
    below = {}
    for k, leaf in enumerate(tree.leaves):
        for a in tree.path_to_root(leaf):
            below.setdefault(a, []).append(k)
    level = tree.height if weighting == "height" else tree.depth
    out = []
    for p, t in zip(P, y.tolist(), strict=True):
        path = tree.path_to_root(tree.leaves[t])
        total = 0.0
        for c, parent in zip(path[:-1], path[1:], strict=True):
            total -= math.exp(-alpha * level[c]) * math.log(p[below[c]].sum() / p[below[parent]].sum())
        out.append(total)
    return float(np.mean(out))


@pytest.mark.parametrize("tree", [UNEVEN, load("cifar100")], ids=["uneven", "cifar100"])
def test_hxe_with_alpha_zero_is_cross_entropy(tree):
    """The conditional probabilities telescope: Σ log p(C|parent C) = log p(y) − log p(root) = log p(y)."""
    Z, y = _batch(tree.K)
    opts = LossOptions(hierarchy=hierarchy_data(tree, alpha=0.0))
    assert float(LOSSES["hxe"](Z, y, opts)) == pytest.approx(float(F.cross_entropy(Z, y)), rel=1e-13, abs=1e-14)


@pytest.mark.parametrize("weighting", ["height", "depth"])
@pytest.mark.parametrize("alpha", [0.1, 0.5, 2.0])
def test_hxe_against_the_naive_definition(alpha, weighting):
    for tree in (UNEVEN, load("balanced:2,3,2")):
        Z, y = _batch(tree.K, seed=3)
        opts = LossOptions(hierarchy=hierarchy_data(tree, alpha=alpha, weighting=weighting))
        assert float(LOSSES["hxe"](Z, y, opts)) == pytest.approx(naive_hxe(Z, y, tree, alpha, weighting), rel=1e-12)


def test_hxe_gradient():
    tree = UNEVEN
    Z, y = _batch(tree.K, N=8, seed=4)
    opts = LossOptions(hierarchy=hierarchy_data(tree, alpha=0.7))
    assert torch.autograd.gradcheck(lambda z: LOSSES["hxe"](z, y, opts), (Z.requires_grad_(True),))


def test_soft_labels_against_the_definition_and_tend_to_ce():
    tree = load("balanced:2,5")
    Z, y = _batch(tree.K, seed=5)
    D = tree.lca_heights / tree.tree_height
    beta = 4.0
    q = np.exp(-beta * D) / np.exp(-beta * D).sum(1, keepdims=True)
    naive = -np.mean([(q[t] * torch.log_softmax(z, 0).numpy()).sum() for z, t in zip(Z, y.tolist(), strict=True)])
    opts = LossOptions(hierarchy=hierarchy_data(tree, beta=beta))
    assert float(LOSSES["soft"](Z, y, opts)) == pytest.approx(naive, rel=1e-13)
    # β → ∞: the off-class target mass is ε <= (K − 1)·e^{−β/2} (nearest class at normalized distance
    # 1/2), and |soft − CE| <= ε·max |log p_j − log p_y|
    ce = float(F.cross_entropy(Z, y))
    logp = torch.log_softmax(Z, 1)
    spread = float((logp - logp.gather(1, y[:, None])).abs().max())
    gaps = []
    for b in (5.0, 10.0, 20.0, 40.0):
        gaps.append(abs(float(LOSSES["soft"](Z, y, LossOptions(hierarchy=hierarchy_data(tree, beta=b)))) - ce))
        assert gaps[-1] <= (tree.K - 1) * math.exp(-b / 2) * spread + 1e-14
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3]


def test_haframe_loss_against_the_definition():
    tree = load("balanced:2,3")
    frame = haframe(tree.lca_heights, 2.0, d=9)
    g = torch.Generator().manual_seed(6)
    H = torch.randn(32, 9, generator=g, dtype=torch.float64)
    y = torch.randint(0, 6, (32,), generator=g)
    W = torch.tensor(frame.W)
    alpha = 0.4
    opts = LossOptions(cosine_weight=alpha, hierarchy=hierarchy_data(tree, frame_gram=frame.S))
    got = float(LOSSES["haframe"](H @ W.T, y, opts, features=H))
    cos = np.array([[h @ w / np.linalg.norm(h) / np.linalg.norm(w) for w in frame.W] for h in H.numpy()])
    naive = (1 - alpha) * float(F.cross_entropy(H @ W.T, y)) + alpha * np.mean(((cos - frame.S[y.numpy()]) ** 2).sum(1))
    assert got == pytest.approx(naive, rel=1e-13)


@pytest.mark.parametrize("kwargs, message", [
    (dict(loss="hxe"), "needs a class tree"),
    (dict(loss="haframe", hierarchy="balanced:2,5", bias=True), "drop --bias"),
    (dict(loss="ce", hierarchy="cifar100"), "has 100 classes, but K = 10"),
    (dict(loss="haframe", hierarchy="balanced:2,5", s_min=-0.9), "not positive semidefinite"),
    (dict(loss="haframe", hierarchy="balanced:2,5", alpha=1.0), r"must lie in \[0, 1\): α = 1 has no minimizer"),
    (dict(loss="ce", hierarchy="balanced:2,5", alpha=0.2), "applies to --loss hxe or haframe"),
    (dict(loss="hxe", hierarchy="balanced:2,5", hxe_weighting="width"), "--hxe-weighting"),
])
def test_configuration_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        resolve(SimConfig.from_dict(kwargs))
