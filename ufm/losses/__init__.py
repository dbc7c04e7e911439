"""Losses of the UFM, as means over samples of a per-sample loss of the logits z = Wh + b.

A registry maps each `--loss` name to a function (logits, labels, options, features, classifier) ->
scalar; HAFrame's cosine loss and HUG also read the features h, and HUG the classifier (its proxies).
The hierarchical losses (HXE, soft labels, HAFrame) read their tree data from `options.hierarchy`
(built once per run by `hierarchy_data`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from analysis.hierarchy import Tree

HXE_WEIGHTINGS = ("height", "depth")


@dataclass(frozen=True)
class HierarchyData:
    """What the hierarchical losses need from the class tree, as float64/int64 CPU tensors.

    HXE: internal nodes grouped by height (children before parents), each group with its children's
    columns (padded with the index of a −inf column); per class the edges of its path to the root
    (child node, parent node, weight λ(child)); soft labels: the K×K target matrix; HAFrame: its Gram S.
    """

    n_nodes: int
    leaf_nodes: torch.Tensor  # (K,) node index of each class
    levels: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # (nodes (g,), children (g, m))
    path_child: torch.Tensor  # (K, H) nodes on each class's path, leaf first (root-padded)
    path_parent: torch.Tensor  # (K, H) their parents (root-padded)
    path_weight: torch.Tensor  # (K, H) λ(child) = exp(−α·height) or exp(−α·depth); 0 on padding
    soft_targets: torch.Tensor | None  # (K, K) row y: softmax(−β·d(y, ·)/tree height)
    frame_gram: torch.Tensor | None  # (K, K) HAFrame S


def hierarchy_data(tree: Tree, alpha: float = 0.0, beta: float | None = None, weighting: str = "height",
                   frame_gram: np.ndarray | None = None) -> HierarchyData:
    """Precompute the tensors of `HierarchyData` for a tree (HXE weights with `alpha` and `weighting`,
    soft labels with `beta` when given, the HAFrame Gram when given)."""
    if weighting not in HXE_WEIGHTINGS:
        raise ValueError(f"HXE weighting must be one of {HXE_WEIGHTINGS}, got {weighting!r}")
    n = len(tree.names)
    levels = []
    for h in range(1, tree.tree_height + 1):
        nodes = [v for v in tree.topological_order if tree.height[v] == h]
        width = max(len(tree.children[v]) for v in nodes)
        kids = [list(tree.children[v]) + [n] * (width - len(tree.children[v])) for v in nodes]
        levels.append((torch.tensor(nodes), torch.tensor(kids)))
    paths = [tree.path_to_root(v) for v in tree.leaves]
    H = max(len(p) for p in paths) - 1
    root = tree.root
    child = np.full((tree.K, H), root)
    parent = np.full((tree.K, H), root)
    weight = np.zeros((tree.K, H))
    level_of = tree.height if weighting == "height" else tree.depth
    for k, p in enumerate(paths):
        for s in range(len(p) - 1):
            child[k, s], parent[k, s] = p[s], p[s + 1]
            weight[k, s] = math.exp(-alpha * float(level_of[p[s]]))
    soft = None
    if beta is not None:
        dist = tree.lca_heights / tree.tree_height
        soft = torch.softmax(torch.tensor(-beta * dist), dim=1)
    return HierarchyData(
        n_nodes=n, leaf_nodes=torch.tensor(tree.leaves), levels=tuple(levels),
        path_child=torch.tensor(child), path_parent=torch.tensor(parent), path_weight=torch.tensor(weight),
        soft_targets=soft, frame_gram=None if frame_gram is None else torch.as_tensor(frame_gram, dtype=torch.float64),
    )


@dataclass(frozen=True)
class HugOptions:
    """HUG's uniformity measure ("energy": Riesz s-energy, s = 0 the log energy; "gram": −log det of the
    Gaussian kernel exp(−r²/(2σ²)); "maxgap": a smooth minimum pairwise distance with sharpness t) and
    the weights of its inter- and intra-class terms."""

    measure: str = "energy"
    s: float = 1.0
    sigma: float = 2 ** -0.5
    sharpness: float = 64.0
    inter_weight: float = 1.0
    intra_weight: float = 1.0


@dataclass(frozen=True)
class LossOptions:
    """Hyper-parameters of the losses (each loss reads the ones it needs)."""

    smoothing: float = 0.1  # label smoothing α: targets (1 − α)e_y + α/K
    target_scale: float = 1.0  # MSE target s·e_y
    cosine_weight: float = 0.4  # HAFrame's α: (1 − α)·CE + α·L_cos
    hug: HugOptions | None = None  # loss "hug"
    hierarchy: HierarchyData | None = None  # hxe, soft, haframe


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions, features=None,
                  classifier=None) -> torch.Tensor:
    """ℓ = −log softmax(z)_y."""
    return F.cross_entropy(logits, y)


def label_smoothing(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions, features=None,
                    classifier=None) -> torch.Tensor:
    """ℓ = −Σ_k q_k log softmax(z)_k with q = (1 − α)e_y + α/K (Szegedy et al. 2016)."""
    return F.cross_entropy(logits, y, label_smoothing=opts.smoothing)


def mse(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions, features=None,
        classifier=None) -> torch.Tensor:
    """ℓ = ½‖z − s·e_y‖² (s = target scale). Note: K/2 times PyTorch's MSELoss with mean reduction."""
    s = opts.target_scale
    z_true = logits.gather(1, y[:, None]).squeeze(1)
    # ½(‖z‖² − 2s·z_y + s²) without building the one-hot targets
    return 0.5 * (logits.square().sum(1) - 2 * s * z_true + s * s).mean()


def _tree(opts: LossOptions, loss: str) -> HierarchyData:
    if opts.hierarchy is None:
        raise ValueError(f"loss {loss!r} needs a class hierarchy (--hierarchy)")
    return opts.hierarchy


def node_log_probs(logits: torch.Tensor, tree: HierarchyData) -> torch.Tensor:
    """(N, nodes + 1): log p(node) = log Σ_{classes below} softmax(z), built bottom-up by log-sum-exp
    over children; the last column is −inf (the padding of the children lists)."""
    L = logits.new_full((logits.shape[0], tree.n_nodes + 1), -math.inf)
    L[:, tree.leaf_nodes.to(logits.device)] = logits.log_softmax(1)
    for nodes, kids in tree.levels:
        L[:, nodes.to(logits.device)] = torch.logsumexp(L[:, kids.to(logits.device)], dim=2)
    return L


def hierarchical_cross_entropy(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions,
                               features=None, classifier=None) -> torch.Tensor:
    """HXE (Bertinetto et al. 2020): ℓ = −Σ_{edges C→parent on y's path} λ(C)·log p(C | parent(C)),
    p(C | parent) = p(C)/p(parent), λ(C) = exp(−α·h(C)). With α = 0 the sum telescopes to −log p(y)."""
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
    d = LCA height / tree height. As β → ∞, q → e_y and the loss → CE."""
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


def inter_class_nonuniformity(proxies: torch.Tensor, opts: HugOptions) -> torch.Tensor:
    """−(inter-class uniformity) of the normalized proxies, per proxy: E_s/K (energy), −log det/K (gram)
    or the smooth −min distance (1/t)·log Σ_{i<j} exp(−t·r_ij) (maxgap). Minimal at the most uniform
    configuration: the simplex ETF for K <= d + 1, a spherical code beyond."""
    from analysis.uniformity import gram_log_det, normalize_rows, pairwise_distances, riesz_energy

    K = len(proxies)
    if opts.measure == "energy":
        return riesz_energy(proxies, opts.s) / K
    if opts.measure == "gram":
        return -gram_log_det(proxies, opts.sigma) / K
    r = pairwise_distances(normalize_rows(proxies))
    return torch.logsumexp(-opts.sharpness * r, dim=0) / opts.sharpness


def hug(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions, features=None, classifier=None) -> torch.Tensor:
    """Hyperspherical uniformity gap (Liu et al., ICLR 2023): inter-class non-uniformity of the class
    proxies (the classifier rows, normalized) plus the intra-class spread of the normalized features,
    mean_i ‖ĥ_i − p̂_{y_i}‖² (= 2 − 2cos; 0 once every class has collapsed onto its proxy). The two are
    decoupled: the intra-class term moves only the features (the proxies enter it detached), so the
    proxies' trajectory does not depend on the intra-class weight."""
    if features is None or classifier is None:
        raise ValueError("the HUG loss needs the features and the classifier (proxies)")
    o = opts.hug or HugOptions()
    from analysis.uniformity import normalize_rows

    proxies = normalize_rows(classifier)
    intra = (normalize_rows(features) - proxies.detach()[y]).square().sum(1).mean()
    inter = inter_class_nonuniformity(classifier, o)  # a constant when the proxies are fixed
    return o.inter_weight * inter + o.intra_weight * intra


LossFn = Callable[..., torch.Tensor]

LOSSES: dict[str, LossFn] = {
    "ce": cross_entropy,
    "ls": label_smoothing,
    "mse": mse,
    "hxe": hierarchical_cross_entropy,
    "soft": soft_labels,
    "haframe": haframe_loss,
    "hug": hug,
}
HIERARCHICAL_LOSSES = ("hxe", "soft", "haframe")
