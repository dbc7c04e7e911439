"""Class hierarchies: rooted trees whose leaves are the classes, node heights and LCA heights.

A `Tree` stores every node once (`names`, `parent` with -1 for the root) and the classes as a tuple of
leaf nodes in class order. Build one from a nested dict / JSON file (`from_nested`), a parent list or
child → parent mapping (`from_parents`), an edge list (`from_edges`), a balanced tree by branching
factors (`balanced`), or by name (`load("cifar100")`, `load("balanced:2,5,10")`, `load("path.json")`).

Class order (fixed, so that class k of a run is leaf k of its tree):
- nested dicts: by the leaves' `label` fields when every leaf has one (CIFAR-100), else depth-first
  order of the leaves with children in the order listed;
- parent lists: leaves in node-index order; edge lists: depth-first order, children in edge order;
- any constructor accepts `leaf_order` (leaf names) to override this.

Heights. `depth(v)` = edges from the root; `height(v)` = edges of the longest downward path to a leaf
(leaves 0); H = height(root), the tree height. The LCA height of classes i, j (DESIGN §5.2's d_ij) is the
number of levels from the leaves up to their lowest common ancestor a = LCA(i, j); d_ii = 0. Where every
leaf sits at depth H this is unambiguous: d_ij = dist(i, a) = dist(j, a) = H − depth(a). Where leaves sit at
different depths (tieredImageNet-H: 3 to 12) a tree's `lca_distance` picks one of LCA_DISTANCES:
- "height_minus_depth": d_ij = H − depth(a), the distance files behind the published numbers (Bertinetto
  et al. 2020; Liang & Davis 2023: "12 − depth" on tieredImageNet-H);
- "max_leaf_distance": d_ij = max(dist(i, a), dist(j, a)), the convention of this package before;
- "auto" (the default): "height_minus_depth" on a tree with uneven leaf depths, so results compare with
  the papers; on a tree whose leaves share a depth the two coincide (and "auto" computes the second).
`Tree.lca_heights` applies the tree's convention, so every consumer (metrics, soft labels, the HAFrame
Gram) reads one matrix; `load(spec, lca_distance=…)` or `tree.with_lca_distance(…)` sets it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

BUILTIN = ("cifar100", "fgvc_aircraft", "inaturalist19", "tiered_imagenet_h")
LCA_DISTANCES = ("auto", "height_minus_depth", "max_leaf_distance")  # see the module docstring
# the K×K LCA matrix is stored in uint8 (0.4 GB at 20 000 classes), but the metrics read it in float64 and the
# losses build a frame Gram and soft labels of the same size (3.2 GB each at 20 000 classes; at the 100 000 once
# stated, 80 GB each: a traceback)
MAX_CLASSES = 20_000


class HierarchyError(ValueError):
    """A malformed tree; the message is one line naming the problem."""


@dataclass(frozen=True)
class Tree:
    """A rooted tree with the classes as leaves. `leaves[k]` is the node of class k."""

    names: tuple[str, ...]
    parent: tuple[int, ...]  # parent[v], -1 for the root
    leaves: tuple[int, ...]
    name: str = ""
    lca_distance: str = "auto"  # the convention of `lca_heights`, one of LCA_DISTANCES

    def __post_init__(self) -> None:
        _validate(self.names, self.parent, self.leaves)
        if self.lca_distance not in LCA_DISTANCES:
            raise HierarchyError(f"lca_distance must be one of {', '.join(LCA_DISTANCES)}, got {self.lca_distance!r}")

    def with_lca_distance(self, lca_distance: str) -> Tree:
        """The same tree with another LCA-distance convention (one of LCA_DISTANCES)."""
        return self if lca_distance == self.lca_distance else replace(self, lca_distance=lca_distance)

    # --- structure -------------------------------------------------------------------------------
    @property
    def K(self) -> int:
        return len(self.leaves)

    @property
    def class_names(self) -> list[str]:
        return [self.names[v] for v in self.leaves]

    @cached_property
    def root(self) -> int:
        return self.parent.index(-1)

    @cached_property
    def children(self) -> tuple[tuple[int, ...], ...]:
        kids: list[list[int]] = [[] for _ in self.names]
        for v, p in enumerate(self.parent):
            if p >= 0:
                kids[p].append(v)
        return tuple(tuple(k) for k in kids)

    @cached_property
    def depth(self) -> np.ndarray:
        """Edges from the root to each node."""
        out = np.full(len(self.names), -1, dtype=np.int64)
        out[self.root] = 0
        for v in self.topological_order:
            if self.parent[v] >= 0:
                out[v] = out[self.parent[v]] + 1
        return out

    @cached_property
    def height(self) -> np.ndarray:
        """Edges of the longest downward path from each node to a leaf (leaves 0)."""
        out = np.zeros(len(self.names), dtype=np.int64)
        for v in reversed(self.topological_order):
            p = self.parent[v]
            if p >= 0:
                out[p] = max(out[p], out[v] + 1)
        return out

    @cached_property
    def topological_order(self) -> tuple[int, ...]:
        """Nodes in breadth-first order from the root (every parent before its children)."""
        order, frontier = [], [self.root]
        while frontier:
            order.extend(frontier)
            frontier = [c for v in frontier for c in self.children[v]]
        return tuple(order)

    @property
    def tree_height(self) -> int:
        return int(self.height[self.root])

    def path_to_root(self, node: int) -> list[int]:
        """[node, parent, …, root]."""
        path = [node]
        while self.parent[path[-1]] >= 0:
            path.append(self.parent[path[-1]])
        return path

    # --- LCA heights ----------------------------------------------------------------------------
    @cached_property
    def leaves_share_depth(self) -> bool:
        """Whether every class sits at depth H (then the LCA-distance conventions coincide)."""
        return bool((self.depth[list(self.leaves)] == self.tree_height).all())

    @property
    def lca_convention(self) -> str:
        """The convention `lca_heights` applies: "height_minus_depth" or "max_leaf_distance" ("auto" resolved)."""
        if self.lca_distance != "auto":
            return self.lca_distance
        return "max_leaf_distance" if self.leaves_share_depth else "height_minus_depth"

    @property
    def lca_description(self) -> str:
        """One line saying which d_ij `lca_heights` holds (for summaries: say which convention a result used)."""
        formula = {"height_minus_depth": "d_ij = tree height - depth(LCA(i, j)) (the papers' distance files)",
                   "max_leaf_distance": "d_ij = max of the two leaves' distances to their LCA"}[self.lca_convention]
        note = ("; every leaf sits at depth H, where this equals the other convention" if self.leaves_share_depth
                else "; leaves at uneven depths")
        chosen = "auto: " if self.lca_distance == "auto" else ""
        return f"{chosen}{formula}, d_ii = 0{note}"

    @cached_property
    def lca_heights(self) -> np.ndarray:
        """K×K integer matrix of LCA distances d_ij under the tree's `lca_convention`, d_ii = 0:
        H − depth(LCA(i, j)), or max(dist(leaf_i, LCA), dist(leaf_j, LCA)). Stored in the smallest unsigned
        integer type that holds the tree's height (uint8 for every tree of height < 256: K² bytes, 8× less than
        int64, which is what lets a 20 000-class tree load)."""
        # bottom-up: at node a, two classes below different children of a have a as their LCA.
        # Work Σ_a (classes below a)² <= height·K², vectorized per node.
        by_depth = self.lca_convention == "height_minus_depth"
        H = self.tree_height
        class_of = {v: k for k, v in enumerate(self.leaves)}
        below: list[list[tuple[int, int]]] = [[] for _ in self.names]  # (class, distance) under each node
        D = np.zeros((self.K, self.K), dtype=np.min_scalar_type(max(H, 1)))
        for a in reversed(self.topological_order):
            if not self.children[a]:
                below[a] = [(class_of[a], 0)]
                continue
            cls, dist, via = [], [], []
            for c_index, c in enumerate(self.children[a]):
                for k, s in below[c]:
                    cls.append(k), dist.append(s + 1), via.append(c_index)
                below[c] = []  # no longer needed
            below[a] = list(zip(cls, dist, strict=True))
            cls_a, dist_a, via_a = np.array(cls), np.array(dist), np.array(via)
            block = D[np.ix_(cls_a, cls_a)]
            split = via_a[:, None] != via_a[None, :]
            block[split] = H - self.depth[a] if by_depth else np.maximum.outer(dist_a, dist_a)[split]
            D[np.ix_(cls_a, cls_a)] = block
        D.setflags(write=False)
        return D

    def normalized_lca(self) -> np.ndarray:
        """d_ij / max d (in [0, 1]), the distance of soft labels and of the HAFrame Gram."""
        D = self.lca_heights
        return D / D.max()

    # --- export ---------------------------------------------------------------------------------
    def to_nested(self, node: int | None = None) -> dict[str, Any]:
        v = self.root if node is None else node
        if not self.children[v]:
            return {"name": self.names[v]}
        return {"name": self.names[v], "children": [self.to_nested(c) for c in self.children[v]]}

    def describe(self) -> str:
        return f"{self.name or 'tree'}: {self.K} classes, height {self.tree_height}, {len(self.names)} nodes"


def _validate(names: Sequence[str], parent: Sequence[int], leaves: Sequence[int]) -> None:
    n = len(names)
    if len(parent) != n:
        raise HierarchyError(f"{len(parent)} parents for {n} nodes")
    roots = [v for v, p in enumerate(parent) if p == -1]
    if len(roots) != 1:
        which = f": {[names[r] for r in roots[:5]]}" if roots else " (every node has a parent: a cycle)"
        raise HierarchyError(f"a tree needs exactly one root, found {len(roots)}{which}")
    for v, p in enumerate(parent):
        if not (p == -1 or 0 <= p < n) or p == v:
            raise HierarchyError(f"node {names[v]!r} has an invalid parent {p}")
    # every node must reach the root without revisiting a node
    state = [0] * n  # 0 unseen, 1 on the current walk, 2 reaches the root
    state[roots[0]] = 2
    for start in range(n):
        walk, v = [], start
        while state[v] == 0:
            state[v] = 1
            walk.append(v)
            v = parent[v]
        if state[v] == 1:
            raise HierarchyError(f"cycle through node {names[v]!r}")
        for w in walk:
            state[w] = 2
    has_child = set(p for p in parent if p >= 0)
    true_leaves = {v for v in range(n) if v not in has_child}
    if len(set(leaves)) != len(leaves):
        dup = next(names[v] for v in leaves if list(leaves).count(v) > 1)
        raise HierarchyError(f"class {dup!r} appears twice in the class order")
    inner = [names[v] for v in leaves if v not in true_leaves]
    if inner:
        raise HierarchyError(f"class {inner[0]!r} is not a leaf (it has children)")
    missing = true_leaves - set(leaves)
    if missing:
        raise HierarchyError(f"leaf {names[min(missing)]!r} is missing from the class order")
    if len(leaves) < 2:
        raise HierarchyError(f"a hierarchy needs at least 2 classes, got {len(leaves)}")


def _order_leaves(names: Sequence[str], leaves_default: Sequence[int], leaf_order: Sequence[str] | None,
                  ) -> tuple[int, ...]:
    if leaf_order is None:
        return tuple(leaves_default)
    leaf_names = [names[v] for v in leaves_default]
    if len(set(leaf_names)) != len(leaf_names):
        raise HierarchyError("leaf names are not unique, so a leaf_order by name is ambiguous")
    index = {nm: v for nm, v in zip(leaf_names, leaves_default, strict=True)}
    unknown = [nm for nm in leaf_order if nm not in index]
    if unknown:
        raise HierarchyError(f"leaf_order names {unknown[0]!r}, which is not a leaf of the tree")
    return tuple(index[nm] for nm in leaf_order)


def _check_name(x: Any, what: str) -> None:
    if not isinstance(x, str) and not (isinstance(x, int) and not isinstance(x, bool)):
        raise HierarchyError(f"{what} must be a string, got {x!r}")


def _check_unique_leaf_names(names: Sequence[str], leaves: Sequence[int]) -> None:
    seen: set[str] = set()
    for v in leaves:
        if names[v] in seen:
            raise HierarchyError(f"duplicate leaf {names[v]!r}")
        seen.add(names[v])


def from_nested(obj: Mapping[str, Any], name: str = "", leaf_order: Sequence[str] | None = None) -> Tree:
    """A tree from nested {"name": str, "children": [...]} dicts (a node without children is a class).

    Accepts the file format of `analysis/hierarchies/*.json` (the tree under "tree"). When every leaf
    carries an integer "label", class k is the leaf with label k.
    """
    if not isinstance(obj, Mapping):
        raise HierarchyError(f"a tree must be a JSON object, got {type(obj).__name__}")
    if "tree" in obj:
        name = name or str(obj.get("dataset", ""))
        obj = obj["tree"]
    names: list[str] = []
    parent: list[int] = []
    labels: list[Any] = []
    leaves: list[int] = []
    stack: list[tuple[Any, int]] = [(obj, -1)]
    while stack:
        node, p = stack.pop()
        if not isinstance(node, Mapping) or "name" not in node:
            where = f" under {names[p]!r}" if p >= 0 else ""
            raise HierarchyError(f"every node needs a 'name'{where}, got {str(node)[:60]}")
        _check_name(node["name"], "a node's 'name'")
        v = len(names)
        names.append(str(node["name"]))
        parent.append(p)
        kids = node.get("children") or []
        if not isinstance(kids, list):
            raise HierarchyError(f"'children' of {names[v]!r} must be a list")
        if not kids:
            leaves.append(v)
            labels.append(node.get("label"))
        stack.extend((c, v) for c in reversed(kids))
    _check_unique_leaf_names(names, leaves)
    labelled = [lab is not None for lab in labels]
    if any(labelled) and leaf_order is None:
        if not all(labelled):
            missing = names[leaves[labelled.index(False)]]
            raise HierarchyError(f"some leaves carry a 'label' and leaf {missing!r} does not: label all or none")
        wrong = [lab for lab in labels if not isinstance(lab, int) or isinstance(lab, bool)]
        if wrong:
            raise HierarchyError(f"leaf labels must be integers, got {wrong[0]!r}")
        if sorted(labels) != list(range(len(leaves))):
            raise HierarchyError(f"leaf labels must be 0..{len(leaves) - 1}, each once")
        by_label = sorted(zip(labels, leaves, strict=True))
        leaves = [v for _, v in by_label]
    return Tree(tuple(names), tuple(parent), _order_leaves(names, leaves, leaf_order), name)


def from_parents(parents: Sequence[int | None] | Mapping[str, str | None], names: Sequence[str] | None = None,
                 leaf_order: Sequence[str] | None = None, name: str = "") -> Tree:
    """A tree from a parent list (parents[v] = index of v's parent, None or -1 for the root; leaves in
    index order) or a {child: parent} mapping of names (parent None for the root; leaves in the
    mapping's order)."""
    if isinstance(parents, Mapping):
        for child, par in parents.items():
            _check_name(child, "a node name")
            if par is not None:
                _check_name(par, f"the parent of {child!r}")
        node_names = list(dict.fromkeys([*parents.keys(), *(p for p in parents.values() if p is not None)]))
        index = {nm: i for i, nm in enumerate(node_names)}
        plist = [index[parents[nm]] if parents.get(nm) is not None else -1 for nm in node_names]
    else:
        if isinstance(parents, (str, bytes)) or not isinstance(parents, Sequence):
            raise HierarchyError(f"parents must be a list of node indices or a {{child: parent}} mapping, "
                                 f"got {type(parents).__name__}")
        bad = [p for p in parents if not (p is None or (isinstance(p, (int, np.integer)) and not isinstance(p, bool)))]
        if bad:
            raise HierarchyError(f"parent indices must be integers (or null for the root), got {bad[0]!r}")
        plist = [-1 if p is None else int(p) for p in parents]
        node_names = [str(x) for x in names] if names is not None else [str(i) for i in range(len(plist))]
        if len(node_names) != len(plist):
            raise HierarchyError(f"{len(node_names)} names for {len(plist)} nodes")
    has_child = {p for p in plist if p >= 0}
    leaves = [v for v in range(len(plist)) if v not in has_child]
    _check_unique_leaf_names(node_names, leaves)
    return Tree(tuple(node_names), tuple(plist), _order_leaves(node_names, leaves, leaf_order), name)


def from_edges(edges: Iterable[Sequence[str]], leaf_order: Sequence[str] | None = None, name: str = "") -> Tree:
    """A tree from (parent, child) name pairs; classes in depth-first order, children in edge order."""
    if isinstance(edges, (str, bytes, Mapping)):
        raise HierarchyError(f"edges must be a list of [parent, child] pairs, got {type(edges).__name__}")
    edges = [tuple(e) if isinstance(e, (list, tuple)) else (e,) for e in edges]
    if any(len(e) != 2 for e in edges):
        raise HierarchyError("every edge must be a [parent, child] pair")
    for e in edges:
        _check_name(e[0], "an edge's parent"), _check_name(e[1], "an edge's child")
    parent_of: dict[str, str] = {}
    for p, c in edges:
        if c in parent_of and parent_of[c] != p:
            raise HierarchyError(f"node {c!r} has two parents: {parent_of[c]!r} and {p!r}")
        parent_of[str(c)] = str(p)
    node_names = list(dict.fromkeys(str(x) for e in edges for x in e))
    index = {nm: i for i, nm in enumerate(node_names)}
    plist = [index[parent_of[nm]] if nm in parent_of else -1 for nm in node_names]
    # depth-first leaf order (only well defined once the structure is validated)
    Tree(tuple(node_names), tuple(plist), tuple(v for v in range(len(plist)) if v not in set(plist)), name)
    kids: list[list[int]] = [[] for _ in node_names]
    for p, c in edges:
        if index[str(c)] not in kids[index[str(p)]]:
            kids[index[str(p)]].append(index[str(c)])
    leaves, stack = [], [plist.index(-1)]
    while stack:
        v = stack.pop()
        if not kids[v]:
            leaves.append(v)
        stack.extend(reversed(kids[v]))
    _check_unique_leaf_names(node_names, leaves)
    return Tree(tuple(node_names), tuple(plist), _order_leaves(node_names, leaves, leaf_order), name)


def balanced(branching: Sequence[int]) -> Tree:
    """The complete tree with branching[l] children per node at depth l: K = Π branching, height =
    len(branching). Classes in depth-first order (class k's ancestors are the mixed-radix digits of k);
    inner nodes are named L{depth}-{index}, classes c{k}."""
    if not branching or any(int(b) < 1 for b in branching):
        raise HierarchyError(f"branching factors must be positive integers, got {list(branching)}")
    if math.prod(int(b) for b in branching) > MAX_CLASSES:
        raise HierarchyError(f"a tree of {math.prod(branching)} classes: at most {MAX_CLASSES} are supported (its K×K "
                             f"LCA matrix in float64 would take {math.prod(branching) ** 2 * 8 / 2**30:.0f} GiB)")
    names, parent, level = ["root"], [-1], [0]
    for depth, b in enumerate(branching, start=1):
        last = depth == len(branching)
        nxt = []
        for p in level:
            for _ in range(int(b)):
                nxt.append(len(names))
                names.append(f"c{len(nxt) - 1}" if last else f"L{depth}-{len(nxt) - 1}")
                parent.append(p)
        level = nxt
    label = "balanced:" + ",".join(str(int(b)) for b in branching)
    return Tree(tuple(names), tuple(parent), tuple(level), label)


def flat(K: int) -> Tree:
    """The tree of height 1: K classes under one root (every mistake equally severe)."""
    return balanced([K])


def builtin_path(name: str) -> Path:
    return Path(str(resources.files("analysis") / "hierarchies" / f"{name}.json"))


def read_json(path: Path | str) -> Tree:
    """A tree from a JSON file: nested {"name","children"} (optionally under "tree"), {"parents": [...]
    or {child: parent}, "names"?}, or {"edges": [[parent, child], ...]}; optional "leaf_order"."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise HierarchyError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise HierarchyError(f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise HierarchyError(f"{path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    except RecursionError:
        raise HierarchyError(f"{path} is nested too deeply to be a class tree") from None
    if not isinstance(obj, dict):
        raise HierarchyError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    order = obj.get("leaf_order")
    if "leaf_order" in obj and (not isinstance(order, list) or not all(isinstance(x, str) for x in order)):
        # the shared data files carry a descriptive string here: only a list of names is an order
        if not isinstance(order, str):
            raise HierarchyError(f"{path}: leaf_order must be a list of leaf names")
        order = None
    if "parents" in obj:
        names = obj.get("names")
        if names is not None and (not isinstance(names, list) or not all(isinstance(x, str) for x in names)):
            raise HierarchyError(f"{path}: names must be a list of strings")
        return from_parents(obj["parents"], names, order, name=path.stem)
    if "edges" in obj:
        return from_edges(obj["edges"], order, name=path.stem)
    return from_nested(obj, name=path.stem if "dataset" not in obj else "", leaf_order=order)


def load(spec: str, K: int | None = None, lca_distance: str = "auto") -> Tree:
    """A tree by spec: a built-in name (`cifar100`, `fgvc_aircraft`, `inaturalist19`,
    `tiered_imagenet_h`), `balanced:b1,b2,…`, `flat:K`, or a JSON file path. With K, the number of
    classes must match. `lca_distance`: the convention of its `lca_heights` (one of LCA_DISTANCES)."""
    if lca_distance not in LCA_DISTANCES:
        raise HierarchyError(f"lca_distance must be one of {', '.join(LCA_DISTANCES)}, got {lca_distance!r}")
    spec = spec.strip()
    if spec.startswith(("balanced:", "flat:")):
        kind, _, arg = spec.partition(":")
        try:
            factors = [int(x) for x in arg.split(",")]
        except ValueError:
            raise HierarchyError(f"{kind}: expects comma-separated integers, got {arg!r}") from None
        tree = balanced(factors) if kind == "balanced" else (flat(factors[0]) if len(factors) == 1 else None)
        if tree is None:
            raise HierarchyError(f"flat: expects one integer K, got {arg!r}")
    elif spec in BUILTIN:
        tree = read_json(builtin_path(spec))
        tree = Tree(tree.names, tree.parent, tree.leaves, spec)
    elif spec.endswith(".json") or Path(spec).exists():
        tree = read_json(spec)
    else:
        raise HierarchyError(f"unknown hierarchy {spec!r}: use one of {', '.join(BUILTIN)}, balanced:b1,b2,…, "
                             "flat:K, or a path to a JSON file")
    if K is not None and tree.K != K:
        raise HierarchyError(f"hierarchy {spec!r} has {tree.K} classes, but K = {K}")
    return tree.with_lca_distance(lca_distance)
