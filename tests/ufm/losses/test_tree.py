"""HXE, soft labels and HAFrame (DESIGN §5.3) against naive per-sample references written here."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis.frames import haframe
from analysis.hierarchy import from_nested, load
from ufm.config import ConfigError, SimConfig
from ufm.errors import python_names
from ufm.losses import LOSSES, LossConfig, LossOptions, hierarchy_data
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
    norm = 1.0
    if weighting == "depth-normalized":  # the sum over every node of the tree, root and leaves included
        norm = sum(math.exp(-alpha * tree.depth[v]) for v in range(len(tree.names)))
    out = []
    for p, t in zip(P, y.tolist(), strict=True):
        path = tree.path_to_root(tree.leaves[t])
        total = 0.0
        for c, parent in zip(path[:-1], path[1:], strict=True):
            total -= math.exp(-alpha * level[c]) / norm * math.log(p[below[c]].sum() / p[below[parent]].sum())
        out.append(total)
    return float(np.mean(out))


@pytest.mark.parametrize("tree", [UNEVEN, load("cifar100")], ids=["uneven", "cifar100"])
def test_hxe_with_alpha_zero_is_cross_entropy(tree):
    """The conditional probabilities telescope: Σ log p(C|parent C) = log p(y) − log p(root) = log p(y)."""
    Z, y = _batch(tree.K)
    opts = LossOptions(hierarchy=hierarchy_data(tree, alpha=0.0))
    assert float(LOSSES["hxe"](Z, y, opts)) == pytest.approx(float(F.cross_entropy(Z, y)), rel=1e-13, abs=1e-14)


@pytest.mark.parametrize("weighting", ["height", "depth", "depth-normalized"])
@pytest.mark.parametrize("alpha", [0.1, 0.5, 2.0])
def test_hxe_against_the_naive_definition(alpha, weighting):
    for tree in (UNEVEN, load("balanced:2,3,2")):
        Z, y = _batch(tree.K, seed=3)
        opts = LossOptions(hierarchy=hierarchy_data(tree, alpha=alpha, weighting=weighting))
        assert float(LOSSES["hxe"](Z, y, opts)) == pytest.approx(naive_hxe(Z, y, tree, alpha, weighting), rel=1e-12)


def _tree_positions(node, prefix=()):
    """nltk's Tree.treepositions() of a nested tree: the root (), then every node by its child indices."""
    yield prefix, node["name"]
    for i, c in enumerate(node.get("children", [])):
        yield from _tree_positions(c, prefix + (i,))


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.4])
def test_depth_normalized_weights_are_the_authors_normalized_exponential_weighting(alpha):
    """better_mistakes/trees.py::get_exponential_weighting(normalize=True): exp(−α·len(position)) over every
    tree position (root and leaves included), divided by their sum; edge C → parent carries C's weight."""
    tree = UNEVEN
    positions = dict(_tree_positions(tree.to_nested()))
    total = sum(math.exp(-alpha * len(pos)) for pos in positions)
    weight_of = {name: math.exp(-alpha * len(pos)) / total for pos, name in positions.items()}
    data = hierarchy_data(tree, alpha=alpha, weighting="depth-normalized")
    for k, leaf in enumerate(tree.leaves):
        path = tree.path_to_root(leaf)[:-1]
        want = [weight_of[tree.names[v]] for v in path] + [0.0] * (data.path_weight.shape[1] - len(path))
        np.testing.assert_allclose(data.path_weight[k].numpy(), want, rtol=1e-15, atol=0)
    assert sum(weight_of.values()) == pytest.approx(1.0, rel=1e-15)


def test_hxe_gradient():
    tree = UNEVEN
    Z, y = _batch(tree.K, N=8, seed=4)
    opts = LossOptions(hierarchy=hierarchy_data(tree, alpha=0.7))
    assert torch.autograd.gradcheck(lambda z: LOSSES["hxe"](z, y, opts), (Z.requires_grad_(True),))


def test_soft_labels_against_the_definition_and_tend_to_ce():
    tree = load("balanced:2,5")
    Z, y = _batch(tree.K, seed=5)
    D = tree.lca_heights / tree.lca_heights.max()
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


def _soft_targets(D, beta):
    q = np.exp(-beta * D)
    return q / q.sum(1, keepdims=True)


def test_soft_label_distances_are_normalized_by_the_largest_distance():
    """The papers divide by max d; that is the tree height unless the root has a single child."""
    one_child = from_nested({"name": "r", "children": [{"name": "s", "children": [
        {"name": "x", "children": [{"name": "a"}, {"name": "b"}]}, {"name": "y", "children": [{"name": "c"}]}]}]})
    assert one_child.tree_height == 3 and one_child.lca_heights.max() == 2
    got = hierarchy_data(one_child, beta=3.0).soft_targets.numpy()
    np.testing.assert_allclose(got, _soft_targets(one_child.lca_heights / 2.0, 3.0), rtol=1e-15)
    assert np.abs(got - _soft_targets(one_child.lca_heights / 3.0, 3.0)).max() > 0.05  # the old normalization
    # every built-in tree has a root with several children: max d = height, the targets are unchanged
    for spec in ("cifar100", "fgvc_aircraft", "inaturalist19", "tiered_imagenet_h", "balanced:2,5", "flat:7"):
        for convention in ("height_minus_depth", "max_leaf_distance"):
            t = load(spec, lca_distance=convention)
            assert t.lca_heights.max() == t.tree_height, (spec, convention)


def test_lca_distance_reaches_soft_labels_and_the_frame_gram():
    """--lca-distance: on tieredImageNet-H (uneven depths) "auto" is 12 − depth(LCA) and the old convention
    stays available; on CIFAR-100 (even depths) all three give identical targets and Gram."""
    from analysis.frames import haframe_gram, psd_bound

    def problem(spec, K, convention):
        return resolve(SimConfig(K=K, d=8, loss=LossConfig("soft", hierarchy=spec, beta=4.0, lca_distance=convention)))

    runs = {c: problem("tiered_imagenet_h", 608, c) for c in ("auto", "height_minus_depth", "max_leaf_distance")}
    for c, p in runs.items():
        D = load("tiered_imagenet_h", lca_distance=c).lca_heights
        np.testing.assert_array_equal(p.tree.lca_heights, D)
        np.testing.assert_allclose(p.soft_targets, _soft_targets(D / D.max(), 4.0), rtol=1e-13)
        np.testing.assert_allclose(p.frame_gram, haframe_gram(D, 2.0, psd_bound(D, 2.0)), rtol=1e-13)
    np.testing.assert_array_equal(runs["auto"].soft_targets, runs["height_minus_depth"].soft_targets)
    assert np.abs(runs["auto"].soft_targets - runs["max_leaf_distance"].soft_targets).max() > 1e-3
    even = [problem("cifar100", 100, c) for c in ("auto", "height_minus_depth", "max_leaf_distance")]
    for p in even[1:]:
        np.testing.assert_array_equal(p.soft_targets, even[0].soft_targets)
        np.testing.assert_array_equal(p.frame_gram, even[0].frame_gram)


def test_lca_distance_flag_and_config():
    import argparse

    from ufm.cli.loss_flags import add_loss_flags, loss_config

    parser = argparse.ArgumentParser()
    add_loss_flags(parser, "ce")
    assert loss_config(parser.parse_args([])).lca_distance == "auto"
    cfg = loss_config(parser.parse_args(["--lca-distance", "max_leaf_distance", "--hxe-weighting",
                                         "depth-normalized", "--loss", "hxe", "--hierarchy", "cifar100"]))
    assert cfg.lca_distance == "max_leaf_distance" and cfg.hxe_weighting == "depth-normalized"
    assert LossConfig.from_flat(cfg.to_flat()) == cfg  # a key of config.json and of sweep grids
    assert LossConfig.from_flat({"loss": "ce"}).lca_distance == "auto"  # an old config.json keeps its meaning


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
    (dict(loss="haframe", hierarchy="balanced:2,5", bias=True), "use --no-bias"),
    (dict(loss="ce", hierarchy="cifar100"), "has 100 classes, but K = 10"),
    (dict(loss="haframe", hierarchy="balanced:2,5", s_min=-0.9), "not positive semidefinite"),
    (dict(loss="haframe", hierarchy="balanced:2,5", alpha=1.0), r"must lie in \[0, 1\): α = 1 has no minimizer"),
    (dict(loss="ce", hierarchy="balanced:2,5", alpha=0.2), "applies to --loss hxe or haframe"),
    (dict(loss="hxe", hierarchy="balanced:2,5", hxe_weighting="width"), "--hxe-weighting"),
    (dict(loss="soft", hierarchy="balanced:2,5", lca_distance="mean"), "--lca-distance must be one of"),
])
def test_configuration_errors(kwargs, message):
    with pytest.raises(ConfigError, match=python_names(message)):
        resolve(SimConfig.from_dict(kwargs))
