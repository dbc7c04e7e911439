"""The UFM's gradient-descent step in closed form for the one-layer model under CE, label smoothing and MSE,
for a batch of B configurations at once (B = 1 for a single run).

F = (1/N) Σ_i ℓ(W h_i + b, y_i) + λ_W/2‖W‖² + λ_H/2‖H‖² + λ_b/2‖b‖². With G = ∂ℓ/∂Z / N (softmax(z) − q for CE
and label smoothing, q = e_y or (1 − α)e_y + α/K; z − s·e_y for MSE ½‖z − s·e_y‖²) the gradients are
∇W = Gᵀ H + λ_W W, ∇H = G W + λ_H H, ∇b = Σ_i G_i + λ_b b. A step is three matrix products — Z = H Wᵀ, Gᵀ H
and G W — and the update of H is fused into the last one, H ← (1 − ηλ_H) H − η G W, so H is read three
times and written once per step instead of the ~9 passes of an autograd step plus an optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MANUAL_LOSSES = ("ce", "ls", "mse")


@dataclass(frozen=True)
class LossSpec:
    """What the closed-form gradient needs of a configuration's loss."""

    loss: str
    smoothing: float = 0.0  # ls
    target_scale: float = 1.0  # mse


def loss_gradient(Z: torch.Tensor, y: torch.Tensor, spec: LossSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(G = ∂(mean ℓ)/∂Z of logits Z (B, N, K) with labels y (N,), the mean data loss (B,))."""
    B, N, K = Z.shape
    rows = torch.arange(N, device=Z.device)
    if spec.loss == "mse":
        G = Z.clone()
        G[:, rows, y] -= spec.target_scale  # residual z − s·e_y
        data = 0.5 * G.square().sum(2).mean(1)
    elif spec.loss in ("ce", "ls"):
        a = spec.smoothing if spec.loss == "ls" else 0.0
        log_p = Z - torch.logsumexp(Z, dim=2, keepdim=True)
        data = -(1 - a) * log_p[:, rows, y].mean(1)
        if a:
            data = data - a * log_p.mean(2).mean(1)  # the uniform part of the target: −(α/K) Σ_k log p_k
        G = log_p.exp_()
        if a:
            G -= a / K
        G[:, rows, y] -= 1 - a
    else:
        raise ValueError(f"no closed-form gradient for loss {spec.loss!r} (only {MANUAL_LOSSES})")
    return G.div_(N), data


def objective_and_grads(H: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, y: torch.Tensor, spec: LossSpec,
                        wd_W: torch.Tensor, wd_H: torch.Tensor, wd_b: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """H (B, N, d), W (B, K, d), b (B, K) or None, weight decays (B,). Returns (F (B,), data loss (B,),
    gradients {"H", "W"(, "b")})."""
    Z = torch.bmm(H, W.transpose(1, 2))
    if b is not None:
        Z = Z + b[:, None, :]
    G, data = loss_gradient(Z, y, spec)
    grads = {"W": torch.bmm(G.transpose(1, 2), H) + wd_W[:, None, None] * W,
             "H": torch.bmm(G, W) + wd_H[:, None, None] * H}
    reg = 0.5 * (wd_W * W.square().sum((1, 2)) + wd_H * H.square().sum((1, 2)))
    if b is not None:
        grads["b"] = G.sum(1) + wd_b[:, None] * b
        reg = reg + 0.5 * wd_b * b.square().sum(1)
    return data + reg, data, grads


@torch.no_grad()
def gd_step(H: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, y: torch.Tensor, spec: LossSpec,
            lr: torch.Tensor, wd_W: torch.Tensor, wd_H: torch.Tensor, wd_b: torch.Tensor) -> torch.Tensor:
    """One gradient-descent step of every configuration, in place (the gradient is taken at the current
    iterate for all blocks, as plain GD does). lr and the weight decays are (B,) tensors. Returns the
    mean data loss (B,) at the iterate the step started from."""
    Z = torch.bmm(H, W.transpose(1, 2))
    if b is not None:
        Z += b[:, None, :]
    G, data = loss_gradient(Z, y, spec)
    G *= lr[:, None, None]  # η G: the step sizes ride on the small N×K matrix
    step_W = torch.bmm(G.transpose(1, 2), H)  # η Gᵀ H, before H moves
    if b is not None:
        b.mul_(1 - lr[:, None] * wd_b[:, None]).sub_(G.sum(1))
    if H.shape[0] == 1:  # one configuration: one fused kernel, H ← (1 − ηλ_H) H − η G W
        H[0].addmm_(G[0], W[0], beta=float(1 - lr[0] * wd_H[0]), alpha=-1.0)
    else:
        H.mul_((1 - lr * wd_H)[:, None, None]).baddbmm_(G, W, alpha=-1.0)
    W.mul_((1 - lr * wd_W)[:, None, None]).sub_(step_W)
    return data
