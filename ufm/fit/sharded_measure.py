"""A history row of a data-parallel UFM run (ufm.distributed), from statistics reduced over the processes: every
process measures its shard of the rows of H and the sums — the closed-form Gᵀ H, Σ G, losses and ‖∇H‖² of
`blocked_objective`, the true and other logits, the class sums and counts, the within-class second moments and
the classifier's agreement of `nc_metrics`, the class sums of `gnc_metrics` — are all-reduced, so each process gets
the row of the single-process run (to rounding), and no process ever holds more than its own rows."""

from __future__ import annotations

import math

import torch

from analysis.blocked import block_rows
from analysis.metrics import gnc_metrics, nc_metrics
from analysis.pairwise import cosine_pair_stats
from analysis.theory import etf_exists
from ufm.fit.fused_gd import LossSpec, blocked_objective
from ufm.fit.measure import MEASURE_COPIES, LogitStats
from ufm.fit.shard import Shard
from ufm.problem import Problem


def measure_shard(params: dict[str, torch.Tensor], y: torch.Tensor, problem: Problem, shard: Shard) -> dict[str, float]:
    """`ufm.fit.measure.measure` of the one-layer UFM under a loss with a closed-form gradient (CE, label smoothing,
    MSE) where `params["H"]` and `y` are this process's rows (`shard`) and W, b are replicated."""
    cfg = problem.cfg
    params = {k: p.detach().double() for k, p in params.items()}
    H, W, b = params["H"], params["W"], params.get("b")
    stats = LogitStats(y, cfg.K)
    rows = block_rows(cfg.K, itemsize=8, copies=MEASURE_COPIES, device=y.device)
    loss = cfg.loss
    F, data, grad_norm = blocked_objective(H, W, b, y, LossSpec(loss.name, loss.smoothing, loss.target_scale),
                                           cfg.wd_W, cfg.wd_H, cfg.wd_b, rows, on_block=stats.add, N=shard.N,
                                           reduce=shard.reduce)
    with torch.no_grad():
        sums = shard.reduce(torch.tensor([stats.z_true, stats.z_other, float(H.square().sum())], dtype=torch.float64,
                                         device=H.device)).tolist()
        z_true, z_other, H_sq = sums
        row = {"loss": float(F), "data_loss": float(data), "grad_norm": grad_norm,
               "W_norm_sq": float(W.square().sum()), "H_norm_sq": H_sq, "z_true": z_true / shard.N,
               "z_other": z_other / shard.N, "logit_gap": (z_true - z_other) / shard.N}
        if b is not None:
            row["b_norm_sq"] = float(b.square().sum())
            row["b_mean"] = float(b.mean())
        pairs_W = cosine_pair_stats(W, problem.gnc_exponent)
        row.update(nc_metrics(H, y, W, b, K=cfg.K, predictions=stats.decisions, pairs_W=pairs_W, reduce=shard.reduce))
        if not etf_exists(cfg.K, cfg.feature_dim):
            row.update(nc2=math.nan, nc3=math.nan, nc2_W=math.nan)
        row.update(gnc_metrics(H, y, W, K=cfg.K, s=problem.gnc_exponent, pairs_W=pairs_W, reduce=shard.reduce))
    return row
