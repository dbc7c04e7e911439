"""The steppers of a data-parallel UFM run (ufm.distributed): each process steps its shard of the rows of H with
W and b replicated, and one all-reduce per step makes the replicated blocks move as in the single-process run.

Fused GD (ufm.fit.steppers.FusedGD with `reduce`): the packed [η Gᵀ H | η Σ G | loss], B(Kd + K + 1) values.
Autograd (SGD with momentum, Adam; full batch or --batch-size): after backward, the gradients of W and b and the
shard's objective in one packed all-reduce. The data loss is the mean over all N samples (or over the whole
mini-batch): each shard's sum is divided by N (the batch size), not by its own row count. H's gradient, its weight
decay and its optimizer state are local; the weight decay of W and b is added once, after the reduction.
"""

from __future__ import annotations

import torch

from ufm.fit.shard import Shard
from ufm.fit.steppers import Autograd, FusedGD, fused
from ufm.model import data_loss, trainable, weight_decay
from ufm.problem import Problem


class ShardedAutograd(Autograd):
    """Autograd on one shard (`y`: the shard's labels; `params["H"]`: its rows). A mini-batch is the one the
    single-process run draws (the same generator, seed + 1, the same randperm of all N rows); each process takes
    the rows of it that it holds, so the trajectory is the single-process one to rounding."""

    def __init__(self, problem: Problem, params: dict[str, torch.Tensor], y: torch.Tensor, shard: Shard):
        super().__init__(problem, params, y)
        self.shard = shard

    def _batch(self) -> tuple[torch.Tensor | None, int]:
        """(this shard's rows of the step's global mini-batch, local indices, or None for all of them; the size of
        the global batch)."""
        cfg = self.problem.cfg
        if cfg.batch_size is None or cfg.batch_size >= cfg.N:
            return None, cfg.N
        rows = torch.randperm(cfg.N, generator=self.batch_gen)[: cfg.batch_size]
        mine = rows[(rows >= self.shard.start) & (rows < self.shard.stop)] - self.shard.start
        return mine.to(self.y.device), cfg.batch_size

    def sharded_objective(self, rows: torch.Tensor | None, total: int) -> torch.Tensor:
        """F of all shards, with ∇F in each parameter's .grad (H: this shard's rows): one all-reduce."""
        cfg, params = self.problem.cfg, self.param_dict
        moving = trainable(params)
        for p in moving.values():
            p.grad = None
        count = self.shard.size if rows is None else len(rows)
        if count:
            data = data_loss(params, self.y, self.problem, rows) * (count / total)
            data.backward()
            data = data.detach()
        else:  # none of this step's batch is here: this shard adds nothing to the data loss
            data = torch.zeros((), dtype=params["H"].dtype, device=self.y.device)
        shared = [k for k in moving if k != "H"]
        with torch.no_grad():
            for p in moving.values():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            H = moving["H"]
            H.grad.add_(H, alpha=cfg.wd_H)
            local = data + 0.5 * cfg.wd_H * torch.dot(H.reshape(-1), H.reshape(-1))
            packed = self.shard.reduce(torch.cat([moving[k].grad.reshape(-1) for k in shared] + [local.reshape(1)]))
            F, offset = packed[-1], 0
            for k in shared:
                p = moving[k]
                p.grad.copy_(packed[offset:offset + p.numel()].view_as(p)).add_(p, alpha=weight_decay(k, cfg))
                F = F + 0.5 * weight_decay(k, cfg) * torch.dot(p.reshape(-1), p.reshape(-1))
                offset += p.numel()
        return F

    def step(self) -> torch.Tensor:
        rows, total = self._batch()
        return self.opt.step(lambda: self.sharded_objective(rows, total))


def sharded_stepper(problem: Problem, params: dict[str, torch.Tensor], y: torch.Tensor, shard: Shard):
    """FusedGD with the packed reduction where the closed-form GD step applies, else ShardedAutograd."""
    if fused(problem.cfg):
        return FusedGD([problem], [params], y, N=shard.N, reduce=shard.reduce)
    return ShardedAutograd(problem, params, y, shard)
