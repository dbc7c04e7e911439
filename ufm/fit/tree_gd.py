"""Full-batch GD on the one-layer UFM under the hierarchical losses with their gradients written out, as
ufm.fit.fused_gd does for CE/LS/MSE: no autograd graph, the step's three matrix products plus two small ones.

Soft labels (Bertinetto et al. 2020): ℓ = −Σ_k q_{y,k} log p_k, so ∂ℓ/∂z = p − q_y.

With p = softmax(z) and node masses p(v) = Σ_{k below v} p_k, ∂ log p(v)/∂z_k = [k below v]·p_k/p(v) − p_k. HXE is
ℓ = −Σ_v c_{y,v} log p(v) with c_{y,v} = Σ over y's path edges of λ(e)·([v = child(e)] − [v = parent(e)]); the
−p_k terms cancel (Σ_v c_{y,v} = 0), so ∂ℓ/∂z_k = −p_k·Σ_v [k below v]·c_{y,v}/p(v). Among the classes only y
itself has a coefficient (its leaf edge's λ), which contributes −c_{y,y}·[k = y]; the internal nodes contribute
−p ⊙ ((C_int / (p·B)) Bᵀ), B the K × g membership matrix of the internal nodes: two small products."""

from __future__ import annotations

import torch

from ufm.config import SimConfig
from ufm.problem import Problem


def tree_fused(cfg: SimConfig) -> bool:
    """The runs these steps serve: full-batch GD on the one-layer UFM with free features under HXE or soft labels."""
    return (cfg.loss.name in ("hxe", "soft") and cfg.optimizer == "gd" and cfg.depth == 1 and cfg.features == "free"
            and cfg.normalize == "none" and (cfg.batch_size is None or cfg.batch_size >= cfg.N))


def tree_step(problem: Problem, params: dict[str, torch.Tensor], y: torch.Tensor):
    """The written-out step of this configuration's loss: HXEStep or SoftLabelStep."""
    return (HXEStep if problem.cfg.loss.name == "hxe" else SoftLabelStep)(problem, params, y)


@torch.no_grad()
def gd_update(params: dict[str, torch.Tensor], G: torch.Tensor, lr: float, wd: dict[str, float]) -> torch.Tensor:
    """One GD step of the one-layer UFM given G = ∂(mean ℓ)/∂Z: b, H and W move by −lr·(gradient + λ·block), H in
    one addmm (no N × d temporary). Returns the weight-decay term λ/2‖·‖² before the step."""
    H, W, b = params["H"], params["W"], params.get("b")
    reg = 0.5 * sum(wd[k] * torch.dot(v.reshape(-1), v.reshape(-1)) for k, v in params.items())
    gW = G.T @ H  # before H moves
    if b is not None:
        b.mul_(1 - lr * wd["b"]).sub_(G.sum(0), alpha=lr)
    H.addmm_(G, W, beta=1 - lr * wd["H"], alpha=-lr)
    W.mul_(1 - lr * wd["W"]).sub_(gW, alpha=lr)
    return reg


def logits_of(params: dict[str, torch.Tensor]) -> torch.Tensor:
    Z = params["H"] @ params["W"].T
    return Z + params["b"] if "b" in params else Z


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
        self.params_, self.cfg, self.y = params, cfg, y[:, None]
        H = params["H"]
        dtype, device = H.dtype, H.device
        K, g = cfg.K, tree.below.shape[1]
        coef = torch.zeros(K, K + g + 1, dtype=torch.float64)  # the last column: the padding node (weight 0)
        rows = torch.arange(K)[:, None].expand_as(tree.path_child)
        coef.index_put_((rows, tree.path_child), tree.path_weight, accumulate=True)
        coef.index_put_((rows, tree.path_parent), -tree.path_weight, accumulate=True)
        self.c_leaf = coef[torch.arange(K), torch.arange(K)].to(device=device, dtype=dtype)[y][:, None]  # (N, 1)
        self.C = coef[:, K: K + g].to(device=device, dtype=dtype)[y]  # (N, g): the internal nodes' coefficients
        self.live = self.C != 0  # only the nodes on each sample's path enter the loss
        self.B = tree.below.to(device=device, dtype=dtype)  # (K, g)
        self.lr, self.wd = cfg.lr, {"W": cfg.wd_W, "H": cfg.wd_H, "b": cfg.wd_b}

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """One GD step; returns F before it (the mean HXE plus the weight decay)."""
        N = len(self.y)
        log_p = logits_of(self.params_).log_softmax(1)
        P = log_p.exp()
        mass = P @ self.B  # (N, g): p(v) of the internal nodes
        R = torch.where(self.live, self.C / mass, 0.0)
        F = -(self.c_leaf * log_p.gather(1, self.y)).sum() - (self.C * torch.where(self.live, mass, 1.0).log()).sum()
        G = P * (R @ self.B.T)
        G.scatter_add_(1, self.y, self.c_leaf)
        G.mul_(-1.0 / N)  # ∂(mean ℓ)/∂Z
        return F / N + gd_update(self.params_, G, self.lr, self.wd)

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
        self.params_, self.cfg, self.y = params, cfg, y[:, None]
        H = params["H"]
        self.Q = problem.options.hierarchy.soft_targets.to(device=H.device, dtype=H.dtype)[y]  # (N, K)
        self.lr, self.wd = cfg.lr, {"W": cfg.wd_W, "H": cfg.wd_H, "b": cfg.wd_b}

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        N = len(self.y)
        log_p = logits_of(self.params_).log_softmax(1)
        F = -(self.Q * log_p).sum() / N
        G = (log_p.exp() - self.Q) / N
        return F + gd_update(self.params_, G, self.lr, self.wd)
