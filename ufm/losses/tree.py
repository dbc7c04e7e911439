"""The hierarchical losses (DESIGN §5.3): hierarchical cross-entropy, soft labels, and HAFrame's fixed
frame with its cosine loss; they read their tree data from `options.hierarchy` (built once per run)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from analysis.hierarchy import Tree
from ufm.losses.options import LossOptions

# HXE edge weights λ(C) of the edge C → parent(C): "height" exp(−α·height(C)) (the paper, Bertinetto et al. 2020);
# "depth" exp(−α·depth(C)) (the authors' code, better_mistakes/trees.py::get_exponential_weighting, before
# normalization); "depth-normalized" the same divided by Σ_v exp(−α·depth(v)) over every node v of the tree, the
# root and the leaves included (that function's normalize=True, the default of their training scripts: all the
# weights of the tree sum to 1)
HXE_WEIGHTINGS = ("height", "depth", "depth-normalized")


@dataclass(frozen=True)
class HierarchyData:
    """What the hierarchical losses need from the class tree, as float64/int64 CPU tensors.

    HXE: which classes lie below each internal node (a K × g 0/1 matrix), the column of every node in
    [classes, internal nodes, a −inf padding column]; per class the edges of its path to the root (child node,
    parent node, weight λ(child)); soft labels: the K×K target matrix; HAFrame: its Gram S.
    """

    n_nodes: int
    leaf_nodes: torch.Tensor  # (K,) node index of each class
    below: torch.Tensor  # (K, g) float64: 1 where class k lies below internal node j (internal nodes in id order)
    columns: torch.Tensor  # (n_nodes + 1,) column of node v in node_log_probs: [classes, internal nodes, −inf]
    path_child: torch.Tensor  # (K, H) columns (`columns`) of the nodes on each class's path, leaf first (root-padded)
    path_parent: torch.Tensor  # (K, H) the columns of their parents (root-padded)
    path_weight: torch.Tensor  # (K, H) λ(child) of the weighting (HXE_WEIGHTINGS); 0 on padding
    soft_targets: torch.Tensor | None  # (K, K) row y: softmax(−β·d(y, ·)/max d)
    frame_gram: torch.Tensor | None  # (K, K) HAFrame S


def hierarchy_data(tree: Tree, alpha: float = 0.0, beta: float | None = None, weighting: str = "height",
                   frame_gram: np.ndarray | None = None) -> HierarchyData:
    """Precompute the tensors of `HierarchyData` for a tree (HXE weights with `alpha` and `weighting`, one of
    HXE_WEIGHTINGS; soft labels with `beta` when given, from the tree's `lca_heights` (its LCA-distance
    convention) divided by their largest value; the HAFrame Gram when given)."""
    if weighting not in HXE_WEIGHTINGS:
        raise ValueError(f"HXE weighting must be one of {HXE_WEIGHTINGS}, got {weighting!r}")
    n = len(tree.names)
    internal = [v for v in range(n) if tree.children[v]]
    class_of = {v: k for k, v in enumerate(tree.leaves)}
    below = np.zeros((tree.K, len(internal)))
    for j, a in enumerate(internal):
        stack = [a]
        while stack:  # the classes under a
            v = stack.pop()
            if v in class_of:
                below[class_of[v], j] = 1.0
            stack.extend(tree.children[v])
    columns = np.full(n + 1, tree.K + len(internal))  # the padding node n (and anything unset): the −inf column
    columns[list(tree.leaves)] = np.arange(tree.K)
    columns[internal] = tree.K + np.arange(len(internal))
    paths = [tree.path_to_root(v) for v in tree.leaves]
    H = max(len(p) for p in paths) - 1
    root = tree.root
    child = np.full((tree.K, H), root)
    parent = np.full((tree.K, H), root)
    weight = np.zeros((tree.K, H))
    level_of = tree.height if weighting == "height" else tree.depth
    total = math.fsum(math.exp(-alpha * float(x)) for x in tree.depth) if weighting == "depth-normalized" else 1.0
    for k, p in enumerate(paths):
        for s in range(len(p) - 1):
            child[k, s], parent[k, s] = p[s], p[s + 1]
            weight[k, s] = math.exp(-alpha * float(level_of[p[s]])) / total
    soft = None
    if beta is not None:
        # normalized by the largest distance, as the papers do (Bertinetto et al. 2020; Liang & Davis 2023): the
        # tree height unless the root has a single child
        D = tree.lca_heights
        soft = torch.softmax(torch.tensor(-beta * (D / D.max())), dim=1)
    return HierarchyData(
        n_nodes=n, leaf_nodes=torch.tensor(tree.leaves), below=torch.tensor(below), columns=torch.tensor(columns),
        path_child=torch.tensor(columns[child]), path_parent=torch.tensor(columns[parent]),
        path_weight=torch.tensor(weight),
        soft_targets=soft, frame_gram=None if frame_gram is None else torch.as_tensor(frame_gram, dtype=torch.float64),
    )


def _tree(opts: LossOptions, loss: str) -> HierarchyData:
    if opts.hierarchy is None:
        raise ValueError(f"loss {loss!r} needs a class hierarchy (LossConfig.hierarchy)")
    return opts.hierarchy


def node_log_probs(logits: torch.Tensor, tree: HierarchyData) -> torch.Tensor:
    """(N, nodes + 1): log p(node) = log Σ_{classes below} softmax(z) in the column `tree.columns[v]` of node v —
    the K classes first, then the internal nodes; the last column is −inf (padding). Classes: log_softmax.
    Internal nodes: one product with the 0/1 matrix of the classes below them, log(Σ_k e^{z_k − m}·below_kj) + m −
    lse(z), m = max z, in float64 (e^{z − m} underflows only 745 below the largest logit): one matrix product
    instead of a log-sum-exp per level of the tree."""
    lse = logits.logsumexp(1, keepdim=True)
    z = logits.double()
    m = z.max(1, keepdim=True).values.detach()  # a shift for range only: the result does not depend on it
    below = tree.below.to(device=logits.device, dtype=torch.float64)
    internal = ((z - m).exp() @ below).log() + m - lse.double()
    pad = logits.new_full((logits.shape[0], 1), -math.inf)
    return torch.cat([logits - lse, internal.to(logits.dtype), pad], dim=1)


def hierarchical_cross_entropy(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions,
                               features=None, classifier=None) -> torch.Tensor:
    """HXE (Bertinetto et al. 2020): ℓ = −Σ_{edges C→parent on y's path} λ(C)·log p(C | parent(C)),
    p(C | parent) = p(C)/p(parent), λ(C) = exp(−α·h(C)) (or the depth weightings of HXE_WEIGHTINGS). With α = 0
    and unnormalized weights the sum telescopes to −log p(y)."""
    tree = _tree(opts, "hxe")
    L = node_log_probs(logits, tree)
    dev = logits.device
    child, parent = tree.path_child.to(dev)[y], tree.path_parent.to(dev)[y]
    weight = tree.path_weight.to(device=dev, dtype=logits.dtype)[y]
    conditional = L.gather(1, child) - L.gather(1, parent)
    return -(weight * conditional).sum(1).mean()


def soft_labels(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions, features=None,
                classifier=None) -> torch.Tensor:
    """Soft labels (Bertinetto et al. 2020): ℓ = −Σ_A q_A log softmax(z)_A, q = softmax(−β·d(A, y)),
    d = LCA distance / the largest LCA distance. As β → ∞, q → e_y and the loss → CE."""
    tree = _tree(opts, "soft")
    q = tree.soft_targets.to(device=logits.device, dtype=logits.dtype)[y]
    return -(q * logits.log_softmax(1)).sum(1).mean()


def haframe_loss(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions, features=None,
                 classifier=None) -> torch.Tensor:
    """HAFrame (Liang & Davis 2023): (1 − α)·CE(Wh) + α·Σ_k (cos(w_k, h) − S_{k,y})², W the fixed frame
    with unit rows, so cos(w_k, h) = z_k/‖h‖ (no bias: the logits are the plain Wh)."""
    tree = _tree(opts, "haframe")
    if features is None:
        raise ValueError("the HAFrame loss needs the features h")
    a = opts.cosine_weight
    S = tree.frame_gram.to(device=logits.device, dtype=logits.dtype)
    norms = features.norm(dim=1, keepdim=True).clamp_min(torch.finfo(logits.dtype).tiny)
    cosine = ((logits / norms - S[y]) ** 2).sum(1).mean()
    return (1 - a) * F.cross_entropy(logits, y) + a * cosine

