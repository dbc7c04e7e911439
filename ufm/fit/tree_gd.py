"""Full-batch GD on the one-layer UFM under the hierarchical losses with their gradients written out, as
ufm.fit.fused_gd does for CE/LS/MSE: no autograd graph, the step's three matrix products plus two small ones.

Soft labels (Bertinetto et al. 2020): ℓ = −Σ_k q_{y,k} log p_k, so ∂ℓ/∂z = p − q_y.

With p = softmax(z) and node masses p(v) = Σ_{k below v} p_k, ∂ log p(v)/∂z_k = [k below v]·p_k/p(v) − p_k. HXE is
ℓ = −Σ_v c_{y,v} log p(v) with c_{y,v} = Σ over y's path edges of λ(e)·([v = child(e)] − [v = parent(e)]); the
−p_k terms cancel (Σ_v c_{y,v} = 0), so ∂ℓ/∂z_k = −p_k·Σ_v [k below v]·c_{y,v}/p(v). Among the classes only y
itself has a coefficient (its leaf edge's λ), which contributes −c_{y,y}·[k = y]; the internal nodes contribute
−p ⊙ ((C_int / (p·B)) Bᵀ), B the K × g membership matrix of the internal nodes: two small products.

The gradient of a row depends on that row's logits alone, so a step runs over blocks of samples within the memory
budget (analysis.blocked; DESIGN §8): Gᵀ H accumulates over the blocks before W moves, each block of H moves with
the old W (`blocked_gd_step`); the per-sample targets are gathered per block from per-class tables."""

from __future__ import annotations

from collections.abc import Callable

import torch

from analysis.blocked import block_rows, logit_blocks
from ufm.config import SimConfig
from ufm.problem import Problem


def tree_fused(cfg: SimConfig) -> bool:
    """The runs these steps serve: full-batch GD on the one-layer UFM with free features under HXE or soft labels."""
    return (cfg.loss.name in ("hxe", "soft") and cfg.optimizer == "gd" and cfg.depth == 1 and cfg.features == "free"
            and cfg.normalize == "none" and (cfg.batch_size is None or cfg.batch_size >= cfg.N))


def tree_step(problem: Problem, params: dict[str, torch.Tensor], y: torch.Tensor):
    """The written-out step of this configuration's loss: HXEStep or SoftLabelStep."""
    return (HXEStep if problem.cfg.loss.name == "hxe" else SoftLabelStep)(problem, params, y)


# N × K-shaped temporaries of a block alive at once (logits, log-probabilities, probabilities, the gradient, …)
TREE_COPIES = 6

BlockGradient = Callable[[slice, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def blocked_gd_step(params: dict[str, torch.Tensor], block_gradient: BlockGradient, lr: float, wd: dict[str, float],
                    rows: int) -> torch.Tensor:
    """One GD step of the one-layer UFM, the loss's gradient computed block by block: `block_gradient(rows, Z_rows)`
    gives (G_rows = ∂(mean ℓ)/∂Z_rows, Σ_{i in rows} ℓ_i/N) from the block's logits Z_rows = H_rows Wᵀ + b. b, H
    and W move by −lr·(gradient + λ·block), each block of H in one addmm (no N × d temporary) with the old W.
    Returns F before the step: the mean loss plus λ/2‖·‖².
    >>> p = {"H": torch.ones(4, 2, dtype=torch.float64), "W": torch.ones(3, 2, dtype=torch.float64)}
    >>> zero = lambda rows, Z: (torch.zeros_like(Z), Z.new_zeros(()))
    >>> float(blocked_gd_step(p, zero, 0.1, {"W": 1.0, "H": 1.0, "b": 0.0}, rows=3)), float(p["W"][0, 0])
    (7.0, 0.9)
    """
    H, W, b = params["H"], params["W"], params.get("b")
    reg = 0.5 * sum(wd[k] * torch.dot(v.reshape(-1), v.reshape(-1)) for k, v in params.items())
    data, gW, gb = None, None, None
    for block, Z in logit_blocks(H, W, b, rows=rows):
        G, part = block_gradient(block, Z)
        data = part if data is None else data + part
        step = G.T @ H[block]  # before this block of H moves
        gW = step if gW is None else gW.add_(step)
        if b is not None:
            gb = G.sum(0) if gb is None else gb.add_(G.sum(0))
        H[block].addmm_(G, W, beta=1 - lr * wd["H"], alpha=-lr)
    if b is not None:
        b.mul_(1 - lr * wd["b"]).sub_(gb, alpha=lr)
    W.mul_(1 - lr * wd["W"]).sub_(gW, alpha=lr)
    return data + reg


class HXEStep:
    """The stepper (ufm.fit.steppers' interface) of one HXE configuration. Example (equal to the autograd step):
    >>> from ufm.config import SimConfig; from ufm.problem import resolve; from ufm.model import init_params
    >>> from ufm.fit.steppers import Autograd
    >>> p = resolve(SimConfig.from_dict({"K": 6, "n": 3, "d": 8, "loss": "hxe", "hierarchy": "balanced:2,3",
    ...                                  "dtype": "float64", "bias": True}))
    >>> a = init_params(p, torch.device("cpu"), torch.float64); y = p.labels()
    >>> b = {k: v.detach().clone().requires_grad_(True) for k, v in a.items()}
    >>> ref, ours = Autograd(p, a, y), HXEStep(p, b, y); _ = [(ref.step(), ours.step()) for _ in range(5)]
    >>> float((ours.params(0)["H"] - ref.params(0)["H"]).detach().abs().max()) < 1e-12
    True
    """

    def __init__(self, problem: Problem, params: dict[str, torch.Tensor], y: torch.Tensor):
        cfg, tree = problem.cfg, problem.options.hierarchy
        self.params_, self.cfg, self.y = params, cfg, y
        H = params["H"]
        dtype, device = H.dtype, H.device
        K, g = cfg.K, tree.below.shape[1]
        coef = torch.zeros(K, K + g + 1, dtype=torch.float64)  # the last column: the padding node (weight 0)
        rows = torch.arange(K)[:, None].expand_as(tree.path_child)
        coef.index_put_((rows, tree.path_child), tree.path_weight, accumulate=True)
        coef.index_put_((rows, tree.path_parent), -tree.path_weight, accumulate=True)
        # per class (gathered per block of samples): the leaf's own coefficient and the internal nodes' ones
        self.c_leaf = coef[torch.arange(K), torch.arange(K)].to(device=device, dtype=dtype)[:, None]  # (K, 1)
        self.C = coef[:, K: K + g].to(device=device, dtype=dtype)  # (K, g)
        self.B = tree.below.to(device=device, dtype=dtype)  # (K, g)
        self.lr, self.wd = cfg.lr, {"W": cfg.wd_W, "H": cfg.wd_H, "b": cfg.wd_b}
        self.rows = block_rows(K + g, itemsize=H.element_size(), copies=TREE_COPIES, device=device)

    def gradient(self, block: slice, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(∂(mean ℓ)/∂Z, Σ ℓ/N) of the samples `block` at their logits Z."""
        y = self.y[block, None]
        c_leaf, C = self.c_leaf[y[:, 0]], self.C[y[:, 0]]
        live = C != 0  # only the nodes on each sample's path enter the loss
        log_p = Z.log_softmax(1)
        P = log_p.exp()
        mass = P @ self.B  # (n, g): p(v) of the internal nodes
        R = torch.where(live, C / mass, 0.0)
        loss = -(c_leaf * log_p.gather(1, y)).sum() - (C * torch.where(live, mass, 1.0).log()).sum()
        G = P * (R @ self.B.T)
        G.scatter_add_(1, y, c_leaf)
        N = len(self.y)
        return G.mul_(-1.0 / N), loss / N

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """One GD step; returns F before it (the mean HXE plus the weight decay)."""
        return blocked_gd_step(self.params_, self.gradient, self.lr, self.wd, self.rows)

    def stalled(self) -> bool:
        return False

    def sync(self) -> None:
        pass

    def params(self, i: int) -> dict[str, torch.Tensor]:
        return self.params_


class SoftLabelStep(HXEStep):
    """Soft labels' written-out GD step: G = (p − q_y)/N (module docstring); the rest as HXEStep."""

    def __init__(self, problem: Problem, params: dict[str, torch.Tensor], y: torch.Tensor):
        cfg = problem.cfg
        self.params_, self.cfg, self.y = params, cfg, y
        H = params["H"]
        self.Q = problem.options.hierarchy.soft_targets.to(device=H.device, dtype=H.dtype)  # (K, K), row y: q_y
        self.lr, self.wd = cfg.lr, {"W": cfg.wd_W, "H": cfg.wd_H, "b": cfg.wd_b}
        self.rows = block_rows(cfg.K, itemsize=H.element_size(), copies=TREE_COPIES, device=H.device)

    def gradient(self, block: slice, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(∂(mean ℓ)/∂Z, Σ ℓ/N) of the samples `block`: (p − q_y)/N and −Σ q_y log p / N."""
        N = len(self.y)
        Q = self.Q[self.y[block]]
        log_p = Z.log_softmax(1)
        loss = -(Q * log_p).sum() / N
        return (log_p.exp_() - Q).div_(N), loss
