"""The flat losses of the logits: cross-entropy, label smoothing, MSE (each has a closed-form GD step), focal."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ufm.losses.options import LossOptions


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


def focal(logits: torch.Tensor, y: torch.Tensor, opts: LossOptions, features=None,
          classifier=None) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): ℓ = −(1 − p_y)^γ log p_y, p = softmax(z); γ = 0 is CE. 1 − p_y is
    −expm1(log p_y), exact where p_y → 1 (where 1 − p_y itself would round to 0)."""
    log_p = logits.log_softmax(1).gather(1, y[:, None]).squeeze(1)
    miss = (-torch.expm1(log_p)).clamp_min(torch.finfo(logits.dtype).tiny)  # keeps γ < 1 differentiable at p_y = 1
    return -(miss.pow(opts.focal_gamma) * log_p).mean()
