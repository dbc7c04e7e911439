"""Optimizers by name. Weight decay is part of the objective, never the optimizer's own."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ufm.config import SimConfig


class ScaledBiasLBFGS:
    """L-BFGS (strong-Wolfe line search, one iteration per step) over (H, W, b/s).

    Under the mean loss the bias has curvature ~1 while H and W have curvature ~1/(K√n̄), and that
    spread stalls L-BFGS near ‖∇F‖ ≈ 1e-7 (measured, free-bias MSE). Optimizing β = b/s with
    s = (K√n̄)^(-1/2) equalizes the curvatures; the objective and its minimizers are unchanged.
    Once the objective stops changing (the line search sees no decrease at this precision), the
    iterations go on with unit steps and no line search: they use gradients only, which still carry
    information where function values no longer do (measured: ‖W‖² from 8e-9 to 7e-11 relative
    error in float64). That polish keeps the iterate with the smallest gradient norm and ends, with
    `stalled` true, once the gradient norm has not improved for 20 iterations. (Without a line
    search, one iteration evaluates the gradient only at its starting point, so the gradient seen
    after a step belongs to the iterate before it.)
    """

    def __init__(self, params: dict[str, torch.Tensor], cfg: SimConfig) -> None:
        self.params = params
        self.scale = (cfg.K * math.sqrt(cfg.N / cfg.K)) ** -0.5
        self.beta = (params["b"].detach() / self.scale).requires_grad_(True) if "b" in params else None
        leaves = [p for k, p in params.items() if k != "b" and p.requires_grad]
        leaves += [self.beta] if self.beta is not None else []
        self.inner = torch.optim.LBFGS(leaves, lr=cfg.lr, max_iter=1, max_eval=50, history_size=20,
                                       line_search_fn="strong_wolfe", tolerance_grad=0.0,
                                       tolerance_change=0.0)
        self.unchanged, self.last = 0, math.nan
        self.polishing, self.stalled = False, False
        self.best_grad, self.best_state, self.since_best = math.inf, None, 0

    def _sync_bias(self) -> None:
        if self.beta is not None:
            with torch.no_grad():
                self.params["b"].copy_(self.beta * self.scale)

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        def scaled_closure() -> torch.Tensor:
            self._sync_bias()
            F = closure()
            if self.beta is not None:
                self.beta.grad = self.params["b"].grad * self.scale
            return F

        leaves = self.inner.param_groups[0]["params"]
        before = [p.detach().clone() for p in leaves] if self.polishing else None
        F = self.inner.step(scaled_closure)
        self._sync_bias()
        if before is None:
            value = float(F)
            self.unchanged = self.unchanged + 1 if value == self.last else 0
            self.last = value
            if self.unchanged >= 10:
                self.polishing = True
                self.inner.param_groups[0]["line_search_fn"] = None
            return F
        # polish: the gradient left in .grad is the one at `before`, the iterate this step started from
        grad = math.sqrt(sum(float(p.grad.double().square().sum()) for p in leaves))
        if grad < self.best_grad:
            self.best_grad, self.since_best, self.best_state = grad, 0, before
        else:
            self.since_best += 1
        if self.since_best >= 20 or not math.isfinite(grad) or not math.isfinite(float(F)):
            if self.best_state is not None:
                with torch.no_grad():
                    for p, best in zip(leaves, self.best_state, strict=True):
                        p.copy_(best)
                self._sync_bias()
            self.stalled = True
        return F


def make_optimizer(cfg: SimConfig, params: dict[str, torch.Tensor]) -> torch.optim.Optimizer | ScaledBiasLBFGS:
    """gd: plain full-batch gradient descent (the theory's setting); sgd: heavy-ball momentum (on
    mini-batches with --batch-size); adam; lbfgs: L-BFGS, one iteration per step (reaches the optimum
    to float64 precision). All expose step(closure), the closure leaving ∇F in .grad."""
    leaves = [p for p in params.values() if p.requires_grad]
    if cfg.optimizer == "gd":
        return torch.optim.SGD(leaves, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(leaves, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(leaves, lr=cfg.lr)
    if cfg.optimizer == "lbfgs":
        return ScaledBiasLBFGS(params, cfg)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
