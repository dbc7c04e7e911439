"""The unconstrained-features model: free features H (N×d), classifier W (K×d), optional bias b (K,)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ufm.config import SimConfig
from ufm.hierarchical import frame_of, gnc_code, loss_options
from ufm.losses import LOSSES


def labels(counts: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """y = (0,…,0, 1,…,1, …): n_k samples of class k, grouped by class."""
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)).to(device)


def init_params(cfg: SimConfig, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Rows of H and W drawn from N(0, init_scale²/d · I), b = 0.

    Drawn in float64 on the CPU from `cfg.seed`, then cast and moved, so a seed gives the same start
    on every device and in both dtypes. Under `--loss haframe` W is the fixed frame (not trained:
    requires_grad is False, and it carries no weight decay).
    """
    g = torch.Generator().manual_seed(cfg.seed)
    std = cfg.init_scale / math.sqrt(cfg.d)
    params = {
        "H": torch.randn(cfg.N, cfg.d, generator=g, dtype=torch.float64) * std,
        "W": torch.randn(cfg.K, cfg.d, generator=g, dtype=torch.float64) * std,
    }
    if cfg.bias:
        params["b"] = torch.zeros(cfg.K, dtype=torch.float64)
    params = {k: v.to(device=device, dtype=dtype).requires_grad_(True) for k, v in params.items()}
    # fixed classifiers (HAFrame's frame, HUG's fixed proxies) replace the drawn W, untrained
    if cfg.loss == "haframe":
        params["W"] = torch.as_tensor(frame_of(cfg).W, dtype=dtype, device=device)
    if cfg.loss == "hug" and cfg.hug_proxies == "fixed":
        params["W"] = torch.as_tensor(np.array(gnc_code(cfg).points), dtype=dtype, device=device)
    return params


def trainable(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The parameters the optimizer moves (all but a fixed classifier)."""
    return {k: p for k, p in params.items() if p.requires_grad}


def logits(params: dict[str, torch.Tensor], rows: torch.Tensor | None = None) -> torch.Tensor:
    """Z = H Wᵀ + b (for the samples `rows`, all when None)."""
    H = params["H"] if rows is None else params["H"][rows]
    Z = H @ params["W"].T
    return Z + params["b"] if "b" in params else Z


def regularizer(params: dict[str, torch.Tensor], cfg: SimConfig) -> torch.Tensor:
    """λ_W/2‖W‖² + λ_H/2‖H‖² + λ_b/2‖b‖² (squared Frobenius norms, H summed over all N rows)."""
    wd = {"W": cfg.wd_W, "H": cfg.wd_H, "b": cfg.wd_b}
    return sum(0.5 * wd[k] * torch.dot(p.reshape(-1), p.reshape(-1)) for k, p in trainable(params).items())


def data_loss(params: dict[str, torch.Tensor], y: torch.Tensor, cfg: SimConfig,
              rows: torch.Tensor | None = None) -> torch.Tensor:
    """mean_i ℓ(z_i, y_i) over all samples, or over the mini-batch `rows`."""
    H = params["H"] if rows is None else params["H"][rows]
    return LOSSES[cfg.loss](logits(params, rows), y if rows is None else y[rows], loss_options(cfg), features=H,
                            classifier=params["W"])


def objective_and_grad(params: dict[str, torch.Tensor], y: torch.Tensor, cfg: SimConfig,
                       rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, data loss) with ∇F left in each parameter's .grad; F = data loss + regularizer.

    Autograd runs through the data loss only; the regularizer's gradient λp is added in place
    (its backward through p.square() costs several passes over H, more than the matrix products).
    """
    moving = trainable(params)
    for p in moving.values():
        p.grad = None
    data = data_loss(params, y, cfg, rows)
    data.backward()
    with torch.no_grad():
        wd = {"W": cfg.wd_W, "H": cfg.wd_H, "b": cfg.wd_b}
        for k, p in moving.items():
            p.grad.add_(p, alpha=wd[k])
        F = data.detach() + regularizer(params, cfg)
    return F, data.detach()
