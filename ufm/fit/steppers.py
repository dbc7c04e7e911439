"""Steppers: one interface over B configurations stepped together — `step()` does one optimizer step and returns
the losses it saw (B,), `stalled()` says the optimizer has stopped, `params(i)` gives configuration i's current
parameters (synchronized) and `sync()` makes every tensor current. A single run is a batch of one.

FusedGD: full-batch GD on the one-layer UFM under a loss with a closed-form gradient (CE, label smoothing,
MSE), for B >= 1 configurations of one `batch_key` (ufm.fit.fused_gd). Autograd: any loss, depth and
optimizer, one configuration (the optimizer's step on the objective F, autograd through the data loss).
FixedFrame, LogitGD (ufm.fit.fixed_frame): where the classifier is fixed, Autograd on K + 1 coordinates per row,
or HAFrame's GD step on the logits.
HXEStep, SoftLabelStep (ufm.fit.tree_gd): full-batch GD under HXE or soft labels, the gradient written out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ufm.config import SimConfig
from ufm.fit.fused_gd import GDStep, LossSpec
from ufm.fit.optimizers import make_optimizer
from ufm.model import objective_and_grad
from ufm.problem import Problem

# what may differ between the configurations of one fused batch
PER_CONFIG = ("wd_W", "wd_H", "wd_b", "wd_M", "lr", "seed", "init_scale", "certificate")


def fused(cfg: SimConfig) -> bool:
    """Full-batch GD on the one-layer UFM under a loss with a closed-form step (the registry's `fused`): three
    matrix products per step, H updated inside the last, instead of autograd + an optimizer."""
    return (cfg.optimizer == "gd" and cfg.depth == 1 and cfg.features == "free" and cfg.normalize == "none"
            and cfg.loss.entry.fused
            and (cfg.batch_size is None or cfg.batch_size >= cfg.N))


def batch_key(cfg: SimConfig) -> tuple | None:
    """Configurations with the same key step together as one fused batch; None: this one steps alone (no
    closed-form step, or an early stop on the gradient norm, which would split the batch)."""
    if not fused(cfg) or cfg.tol > 0:
        return None
    return tuple(sorted((k, str(v)) for k, v in cfg.to_dict().items() if k not in PER_CONFIG))


class FusedGD:
    """The closed-form GD step on B configurations: H (B, N, d), W (B, K, d), b (B, K). With B = 1 the batch is a
    view of the configuration's own parameters (GDStep then takes its single-configuration path). Data parallel
    (ufm.distributed): H and y are this process's shard, `N` the samples of all shards and `reduce` the sum over
    the processes (GDStep: one packed all-reduce per step)."""

    def __init__(self, problems: Sequence[Problem], params: Sequence[dict[str, torch.Tensor]], y: torch.Tensor, *,
                 N: int | None = None, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None):
        cfgs = [p.cfg for p in problems]
        first, dtype, device = cfgs[0], params[0]["H"].dtype, y.device
        if len(cfgs) == 1:
            self.single = params[0]
            self.batch = {k: params[0][k].unsqueeze(0) if k in params[0] else None for k in ("H", "W", "b")}
        else:
            self.single = None
            stacked = {k: torch.stack([p[k].detach() for p in params]) for k in params[0]}
            self.batch = {k: stacked.get(k) for k in ("H", "W", "b")}
        hyper = [torch.tensor([getattr(c, k) for c in cfgs], dtype=dtype, device=device)
                 for k in ("lr", "wd_W", "wd_H", "wd_b")]
        self.gd = GDStep(y, LossSpec(first.loss.name, first.loss.smoothing, first.loss.target_scale), *hyper, K=first.K,
                     N=N, reduce=reduce)

    def step(self) -> torch.Tensor:
        return self.gd.step(self.batch["H"], self.batch["W"], self.batch["b"])

    def stalled(self) -> bool:
        return False

    def sync(self) -> None:
        self.gd.sync(self.batch["H"])

    def params(self, i: int) -> dict[str, torch.Tensor]:
        self.sync()
        if self.single is not None:
            return self.single
        return {k: v[i].detach().clone().requires_grad_(True) for k, v in self.batch.items() if v is not None}


class Autograd:
    """One configuration, any loss, depth and optimizer: the optimizer's step on F (mini-batches of samples with
    --batch-size)."""

    def __init__(self, problem: Problem, params: dict[str, torch.Tensor], y: torch.Tensor):
        self.problem, self.param_dict, self.y = problem, params, y
        self.opt = make_optimizer(problem.cfg, params)
        self.batch_gen = torch.Generator().manual_seed(problem.cfg.seed + 1)

    def _rows(self) -> torch.Tensor | None:
        """The samples of this step's loss: a random subset of --batch-size, or None for all of them."""
        cfg = self.problem.cfg
        if cfg.batch_size is None or cfg.batch_size >= cfg.N:
            return None
        return torch.randperm(cfg.N, generator=self.batch_gen)[: cfg.batch_size].to(self.y.device)

    def step(self) -> torch.Tensor:
        rows = self._rows()
        return self.opt.step(lambda: objective_and_grad(self.param_dict, self.y, self.problem, rows)[0])

    def stalled(self) -> bool:
        return getattr(self.opt, "stalled", False)

    def sync(self) -> None:
        pass

    def params(self, i: int) -> dict[str, torch.Tensor]:
        return self.param_dict


def make_stepper(problems: Sequence[Problem], params: Sequence[dict[str, torch.Tensor]], y: torch.Tensor):
    """FusedGD for configurations of one batch_key; else, for one configuration, HXEStep or SoftLabelStep
    (full-batch GD under HXE or soft labels), FixedFrame where the classifier is fixed (HAFrame, HUG's fixed
    proxies: the features stepped in K + 1 coordinates per row), else Autograd."""
    from ufm.fit import fixed_frame  # it builds on Autograd
    from ufm.fit.tree_gd import tree_fused, tree_step

    if all(fused(p.cfg) for p in problems) and len({batch_key(p.cfg) for p in problems}) == 1:
        return FusedGD(problems, params, y)
    if len(problems) != 1:
        raise ValueError("configurations step together only with one batch_key (same shapes, loss and steps; "
                         "full-batch GD on the one-layer UFM under a loss with a closed-form step)")
    if tree_fused(problems[0].cfg):
        return tree_step(problems[0], params[0], y)
    if fixed_frame.reducible(problems[0].cfg):
        return fixed_frame.fixed_frame_stepper(problems[0], params[0], y)
    return Autograd(problems[0], params[0], y)
