"""Losses of the UFM, as means over samples of a per-sample loss of the logits z = Wh + b.

A registry maps each `--loss` name to a function (logits, labels, options) -> scalar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossOptions:
    """Hyper-parameters of the losses (each loss reads the ones it needs)."""

    smoothing: float = 0.1  # label smoothing α: targets (1 − α)e_y + α/K
    target_scale: float = 1.0  # MSE target s·e_y


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions) -> torch.Tensor:
    """ℓ = −log softmax(z)_y."""
    return F.cross_entropy(logits, y)


def label_smoothing(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions) -> torch.Tensor:
    """ℓ = −Σ_k q_k log softmax(z)_k with q = (1 − α)e_y + α/K (Szegedy et al. 2016)."""
    return F.cross_entropy(logits, y, label_smoothing=opts.smoothing)


def mse(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions) -> torch.Tensor:
    """ℓ = ½‖z − s·e_y‖² (s = target scale). Note: K/2 times PyTorch's MSELoss with mean reduction."""
    s = opts.target_scale
    z_true = logits.gather(1, y[:, None]).squeeze(1)
    # ½(‖z‖² − 2s·z_y + s²) without building the one-hot targets
    return 0.5 * (logits.square().sum(1) - 2 * s * z_true + s * s).mean()


LossFn = Callable[[torch.Tensor, torch.Tensor, LossOptions], torch.Tensor]

LOSSES: dict[str, LossFn] = {
    "ce": cross_entropy,
    "ls": label_smoothing,
    "mse": mse,
}
