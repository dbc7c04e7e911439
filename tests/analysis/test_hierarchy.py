"""Class trees: LCA heights of hand-built trees, the built-in trees, and malformed input."""

import json

import numpy as np
import pytest

from analysis.hierarchy import HierarchyError, balanced, from_edges, from_nested, from_parents, load

# ((a b) c) (d e): a hand-built tree with leaves at depths 3, 3, 2, 2, 2
NESTED = {"name": "r", "children": [
    {"name": "x", "children": [{"name": "y", "children": [{"name": "a"}, {"name": "b"}]}, {"name": "c"}]},
    {"name": "z", "children": [{"name": "d"}, {"name": "e"}]},
]}
# LCA distances by hand, "max_leaf_distance" (the larger of the two leaves' distances to their LCA):
# d(a,b) = 1; d(a,c): LCA x, distances 2 and 1 -> 2; d(a,d): root, 3 and 2 -> 3; d(c,d): root, 2 and 2 -> 2;
# d(d,e) = 1
EXPECTED = np.array([
    [0, 1, 2, 3, 3],
    [1, 0, 2, 3, 3],
    [2, 2, 0, 2, 2],
    [3, 3, 2, 0, 1],
    [3, 3, 2, 1, 0],
])
# "height_minus_depth" (the papers' distance files, the default "auto" on this uneven tree): 3 − depth(LCA):
# LCA y (depth 2) -> 1, x or z (depth 1) -> 2, the root -> 3
EXPECTED_PAPERS = np.array([
    [0, 1, 2, 3, 3],
    [1, 0, 2, 3, 3],
    [2, 2, 0, 3, 3],
    [3, 3, 3, 0, 2],
    [3, 3, 3, 2, 0],
])


def test_lca_heights_of_a_hand_built_uneven_tree_under_both_conventions():
    tree = from_nested(NESTED)
    assert tree.class_names == ["a", "b", "c", "d", "e"]
    assert tree.lca_distance == "auto" and tree.lca_convention == "height_minus_depth"
    np.testing.assert_array_equal(tree.lca_heights, EXPECTED_PAPERS)
    np.testing.assert_array_equal(tree.with_lca_distance("height_minus_depth").lca_heights, EXPECTED_PAPERS)
    larger = tree.with_lca_distance("max_leaf_distance")
    assert larger.lca_convention == "max_leaf_distance" and larger.names == tree.names
    np.testing.assert_array_equal(larger.lca_heights, EXPECTED)
    assert tree.tree_height == 3 and not tree.leaves_share_depth
    assert tree.height[tree.names.index("x")] == 2 and tree.depth[tree.names.index("y")] == 2
    assert "depth(LCA(i, j))" in tree.lca_description and "uneven" in tree.lca_description
    assert "max of the two leaves" in larger.lca_description


def test_parent_list_mapping_and_edge_list_build_the_same_tree():
    names = ["r", "x", "y", "a", "b", "c", "z", "d", "e"]
    parents = [None, 0, 1, 2, 2, 1, 0, 6, 6]
    np.testing.assert_array_equal(from_parents(parents, names).lca_heights, EXPECTED_PAPERS)
    mapping = {"a": "y", "b": "y", "y": "x", "c": "x", "x": "r", "d": "z", "e": "z", "z": "r", "r": None}
    t = from_parents(mapping)
    order = [t.class_names.index(c) for c in "abcde"]
    np.testing.assert_array_equal(t.lca_heights[np.ix_(order, order)], EXPECTED_PAPERS)
    edges = [("r", "x"), ("r", "z"), ("x", "y"), ("x", "c"), ("y", "a"), ("y", "b"), ("z", "d"), ("z", "e")]
    t = from_edges(edges)
    assert t.class_names == ["a", "b", "c", "d", "e"]  # depth-first, children in edge order
    np.testing.assert_array_equal(t.lca_heights, EXPECTED_PAPERS)
    np.testing.assert_array_equal(t.with_lca_distance("max_leaf_distance").lca_heights, EXPECTED)


def test_leaf_order_reorders_the_classes():
    t = from_nested(NESTED, leaf_order=["e", "d", "c", "b", "a"])
    np.testing.assert_array_equal(t.lca_heights, EXPECTED_PAPERS[::-1, ::-1])
    np.testing.assert_array_equal(t.with_lca_distance("max_leaf_distance").lca_heights, EXPECTED[::-1, ::-1])


def test_balanced_tree_lca_is_the_first_differing_mixed_radix_digit():
    t = balanced([2, 3, 4])
    assert t.K == 24 and t.tree_height == 3
    digits = np.array([[k // 12, (k // 4) % 3, k % 4] for k in range(24)])
    naive = np.zeros((24, 24), dtype=int)
    for i in range(24):
        for j in range(24):
            diff = np.nonzero(digits[i] != digits[j])[0]
            naive[i, j] = 0 if len(diff) == 0 else 3 - diff[0]
    np.testing.assert_array_equal(t.lca_heights, naive)


def test_builtin_trees():
    c = load("cifar100", K=100)
    assert c.tree_height == 5 and c.class_names[:3] == ["apple", "aquarium_fish", "baby"]
    D = c.lca_heights
    # 20 superclasses of 5 classes: each class has 4 siblings at LCA height 1
    assert (D == 1).sum(1).tolist() == [4] * 100
    assert D[3, 42] == 1  # bear, leopard: large carnivores
    f = load("fgvc_aircraft")
    assert f.K == 100 and set(np.unique(f.lca_heights)) == {0, 1, 2, 3}
    t = load("tiered_imagenet_h")
    assert t.K == 608 and t.lca_heights.max() == 12
    assert load("inaturalist19").K == 1010


def _naive_lca(tree, i, j, convention):
    """d_ij from the definition: walk both leaves up to their first common ancestor a."""
    if i == j:
        return 0
    up_i, up_j = tree.path_to_root(tree.leaves[i]), tree.path_to_root(tree.leaves[j])
    a = next(v for v in up_i if v in set(up_j))
    if convention == "height_minus_depth":
        return tree.tree_height - len(tree.path_to_root(a)) + 1
    return max(up_i.index(a), up_j.index(a))


def test_tiered_imagenet_h_defaults_to_the_papers_distance():
    """Uneven leaf depths (3 to 12): "auto" is 12 − depth(LCA), the distance files of the published numbers;
    "max_leaf_distance" keeps the old convention. Both against the definition on 3 000 random pairs."""
    t = load("tiered_imagenet_h")
    assert t.lca_convention == "height_minus_depth" and not t.leaves_share_depth
    depths = t.depth[list(t.leaves)]
    assert depths.min() == 3 and depths.max() == 12
    old = load("tiered_imagenet_h", lca_distance="max_leaf_distance")
    papers = load("tiered_imagenet_h", lca_distance="height_minus_depth")
    np.testing.assert_array_equal(t.lca_heights, papers.lca_heights)
    rng = np.random.default_rng(0)
    for i, j in rng.integers(0, t.K, (3000, 2)):
        assert t.lca_heights[i, j] == _naive_lca(t, i, j, "height_minus_depth")
        assert old.lca_heights[i, j] == _naive_lca(old, i, j, "max_leaf_distance")
    off = ~np.eye(t.K, dtype=bool)
    assert t.lca_heights.max() == old.lca_heights.max() == 12 and t.lca_heights[off].min() >= 1
    assert (t.lca_heights >= old.lca_heights).all()  # H − depth(a) >= either leaf's distance to a
    # the papers' distances are larger on average: 9.37 against 6.27 for a uniformly random wrong guess
    assert t.lca_heights[off].mean() == pytest.approx(9.3653, abs=1e-4)
    assert old.lca_heights[off].mean() == pytest.approx(6.2742, abs=1e-4)


@pytest.mark.parametrize("spec", ["cifar100", "fgvc_aircraft", "inaturalist19", "balanced:2,3,4", "flat:5",
                                  "balanced:1,3,2"])
def test_conventions_coincide_where_leaves_share_a_depth(spec):
    trees = [load(spec, lca_distance=c) for c in ("auto", "height_minus_depth", "max_leaf_distance")]
    assert trees[0].leaves_share_depth and trees[0].lca_convention == "max_leaf_distance"
    for t in trees[1:]:
        np.testing.assert_array_equal(t.lca_heights, trees[0].lca_heights)
    rng = np.random.default_rng(1)
    for i, j in rng.integers(0, trees[0].K, (300, 2)):
        assert trees[0].lca_heights[i, j] == _naive_lca(trees[0], i, j, "height_minus_depth")


def test_an_unknown_lca_distance_is_refused():
    with pytest.raises(HierarchyError, match="lca_distance must be one of"):
        load("flat:3", lca_distance="mean")
    with pytest.raises(HierarchyError, match="lca_distance must be one of"):
        from_nested(NESTED).with_lca_distance("deepest")


def test_flat_tree():
    np.testing.assert_array_equal(load("flat:4").lca_heights, 1 - np.eye(4, dtype=int))


@pytest.mark.parametrize("build, message", [
    (lambda: from_parents([1, 2, 0]), "cycle"),
    (lambda: from_parents([None, 0, 2, 0]), "invalid parent"),
    (lambda: from_parents([None, None, 0]), "exactly one root"),
    (lambda: from_edges([("r", "a"), ("r", "b"), ("b", "c"), ("a", "c")]), "two parents"),
    (lambda: from_nested({"name": "r", "children": [{"name": "a"}, {"name": "a"}]}), "duplicate leaf"),
    (lambda: from_nested(NESTED, leaf_order=["a", "b", "c", "d"]), "missing from the class order"),
    (lambda: from_nested(NESTED, leaf_order=["a", "b", "c", "d", "q"]), "not a leaf"),
    (lambda: from_nested({"name": "r", "children": [{"name": "a"}]}), "at least 2 classes"),
    (lambda: from_nested({"children": []}), "needs a 'name'"),
    (lambda: load("cifar100", K=10), "has 100 classes, but K = 10"),
    (lambda: load("nosuchtree"), "unknown hierarchy"),
    (lambda: load("balanced:2,x"), "comma-separated integers"),
])
def test_malformed_trees_are_refused_with_one_line(build, message):
    with pytest.raises(HierarchyError, match=message) as err:
        build()
    assert "\n" not in str(err.value)


def test_json_files(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"edges": [["r", "x"], ["x", "a"], ["x", "b"], ["r", "c"]]}))
    assert load(str(p)).lca_heights.tolist() == [[0, 1, 2], [1, 0, 2], [2, 2, 0]]
    p.write_text("{not json")
    with pytest.raises(HierarchyError, match="not valid JSON"):
        load(str(p))
    with pytest.raises(HierarchyError, match="cannot read"):
        load(str(tmp_path / "missing.json"))
