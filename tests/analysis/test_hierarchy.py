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
# LCA heights by hand: d(a,b) = 1; d(a,c): LCA x, distances 2 and 1 -> 2; d(a,d): root, 3 and 2 -> 3;
# d(c,d): root, 2 and 2 -> 2; d(d,e) = 1
EXPECTED = np.array([
    [0, 1, 2, 3, 3],
    [1, 0, 2, 3, 3],
    [2, 2, 0, 2, 2],
    [3, 3, 2, 0, 1],
    [3, 3, 2, 1, 0],
])


def test_lca_heights_of_a_hand_built_uneven_tree_take_the_larger_distance():
    tree = from_nested(NESTED)
    assert tree.class_names == ["a", "b", "c", "d", "e"]
    np.testing.assert_array_equal(tree.lca_heights, EXPECTED)
    assert tree.tree_height == 3
    assert tree.height[tree.names.index("x")] == 2 and tree.depth[tree.names.index("y")] == 2


def test_parent_list_mapping_and_edge_list_build_the_same_tree():
    names = ["r", "x", "y", "a", "b", "c", "z", "d", "e"]
    parents = [None, 0, 1, 2, 2, 1, 0, 6, 6]
    np.testing.assert_array_equal(from_parents(parents, names).lca_heights, EXPECTED)
    mapping = {"a": "y", "b": "y", "y": "x", "c": "x", "x": "r", "d": "z", "e": "z", "z": "r", "r": None}
    t = from_parents(mapping)
    order = [t.class_names.index(c) for c in "abcde"]
    np.testing.assert_array_equal(t.lca_heights[np.ix_(order, order)], EXPECTED)
    edges = [("r", "x"), ("r", "z"), ("x", "y"), ("x", "c"), ("y", "a"), ("y", "b"), ("z", "d"), ("z", "e")]
    t = from_edges(edges)
    assert t.class_names == ["a", "b", "c", "d", "e"]  # depth-first, children in edge order
    np.testing.assert_array_equal(t.lca_heights, EXPECTED)


def test_leaf_order_reorders_the_classes():
    t = from_nested(NESTED, leaf_order=["e", "d", "c", "b", "a"])
    np.testing.assert_array_equal(t.lca_heights, EXPECTED[::-1, ::-1])


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
