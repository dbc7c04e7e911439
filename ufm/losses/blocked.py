"""The mean loss over samples in blocks of rows (DESIGN §8): an autograd function whose forward sums the loss block
by block without keeping anything, and whose backward recomputes each block's logits and takes that block's
gradient by autograd, so that no N×K logit matrix, probability matrix or gradient exists at once beyond the memory
budget (analysis.blocked).

It serves every loss whose value is a mean over samples of a function of that sample's logits (and features):
the built-in CE, label smoothing, MSE, focal, HXE, soft labels and HAFrame's CE + cosine loss, and every registered
loss (`register_loss` asks for per-sample losses). The block's loss is `block_loss(X_B, W, b, y_B)`, the mean over
the block; the whole is Σ_B |B|/N · block_loss(B), equal to the one-block value to rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

from analysis.blocked import row_blocks

BlockLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]


class _BlockedMean(torch.autograd.Function):
    """(1/N) Σ_B |B|·block_loss(X_B, W, b, y_B), its gradient recomputed block by block."""

    @staticmethod
    def forward(ctx, block_loss: BlockLoss, y: torch.Tensor, rows: int, X: torch.Tensor, W: torch.Tensor,
                b: torch.Tensor | None) -> torch.Tensor:
        N = X.shape[0]
        total = X.new_zeros(())
        for s in row_blocks(N, rows):
            total += block_loss(X[s], W, b, y[s]) * ((s.stop - s.start) / N)
        ctx.block_loss, ctx.rows = block_loss, rows
        ctx.save_for_backward(y, X, W, b if b is not None else X.new_empty(0))
        ctx.has_bias = b is not None
        return total

    @staticmethod
    @once_differentiable  # a second derivative through the recomputed blocks is not offered: say so, not a wrong one
    def backward(ctx, grad: torch.Tensor):
        y, X, W, b = ctx.saved_tensors
        b = b if ctx.has_bias else None
        need_X, need_W, need_b = ctx.needs_input_grad[3:6]
        N = X.shape[0]
        gX = torch.zeros_like(X) if need_X else None
        gW = torch.zeros_like(W) if need_W else None
        gb = torch.zeros_like(b) if need_b and b is not None else None
        Wl = W.detach().requires_grad_(need_W)
        bl = None if b is None else b.detach().requires_grad_(bool(need_b))
        for s in row_blocks(N, ctx.rows):
            with torch.enable_grad():
                Xl = X[s].detach().requires_grad_(need_X)
                value = ctx.block_loss(Xl, Wl, bl, y[s]) * ((s.stop - s.start) / N)
                wanted = [t for t, need in ((Xl, need_X), (Wl, need_W), (bl, need_b and bl is not None)) if need]
                parts = iter(torch.autograd.grad(value, wanted, grad_outputs=grad, allow_unused=True))
            if need_X:
                g = next(parts)
                if g is not None:
                    gX[s] = g
            for acc, need in ((gW, need_W), (gb, need_b and gb is not None)):
                if need:
                    g = next(parts)
                    if g is not None:
                        acc += g
        return None, None, None, gX, gW, gb


def blocked_mean_loss(block_loss: BlockLoss, X: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None,
                      y: torch.Tensor, rows: int) -> torch.Tensor:
    """mean_i ℓ_i over the N rows of X (the classifier's input), `rows` samples per block: `block_loss(X_B, W, b, y_B)`
    is the mean loss of block B (it forms the block's logits itself). Differentiable in X, W and b; the backward pass
    recomputes each block (module docstring).
    >>> import torch.nn.functional as F
    >>> X, W = torch.randn(7, 3, dtype=torch.float64, requires_grad=True), torch.randn(4, 3, dtype=torch.float64)
    >>> y = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    >>> ce = lambda Xb, W, b, yb: F.cross_entropy(Xb @ W.T, yb)
    >>> blocked = blocked_mean_loss(ce, X, W, None, y, rows=3); blocked.backward()
    >>> g = X.grad.clone(); X.grad = None; whole = ce(X, W, None, y); whole.backward()
    >>> abs(float(blocked.detach() - whole.detach())) < 1e-15, float((X.grad - g).abs().max()) < 1e-15
    (True, True)
    """
    return _BlockedMean.apply(block_loss, y, rows, X, W, b)
