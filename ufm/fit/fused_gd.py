"""The UFM's gradient-descent step in closed form for the one-layer model under CE, label smoothing and MSE,
for a batch of B configurations at once (B = 1 for a single run).

F = (1/N) Σ_i ℓ(W h_i + b, y_i) + λ_W/2‖W‖² + λ_H/2‖H‖² + λ_b/2‖b‖². With G = ∂ℓ/∂Z / N (softmax(z) − q for CE
and label smoothing, q = e_y or (1 − α)e_y + α/K; z − s·e_y for MSE ½‖z − s·e_y‖²) the gradients are
∇W = Gᵀ H + λ_W W, ∇H = G W + λ_H H, ∇b = Σ_i G_i + λ_b b. A step is three matrix products — Z = H Wᵀ, Gᵀ H
and G W — and the update of H is fused into the last one, H ← (1 − ηλ_H) H − η G W, so H is read three
times and written once per step instead of the ~9 passes of an autograd step plus an optimizer.

The logits are kept transposed, Zᵀ (B, K, N): the softmax then reduces over K across contiguous rows of
length N (measured 4× faster than over a last dimension of size K), and Gᵀ H is a plain product.

Many classes (DESIGN §8): the logits, their gradient and the probabilities exist one block of samples at a time,
within the memory budget of analysis.blocked. Every row's gradient depends on its own logits only, so a block's
G_B is final once computed: Gᵀ H accumulates over the blocks before W moves, and each block of H moves at once
with the old W. The step is the same arithmetic in another order of summation (equal to the one-block step to
rounding, tested); with one block (N·K within the budget) it is exactly the one-block step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from analysis.blocked import block_rows, logit_blocks, row_blocks

MANUAL_LOSSES = ("ce", "ls", "mse")  # the registry marks these `fused` (ufm.losses.registry)
# B × K × block temporaries alive at once in a step: the logits, exp(Z − max) (the gradient, in place) and one more
STEP_COPIES = 3
# from this many classes on, a step's logits are row-major, Z = H Wᵀ (n × K): the softmax then runs along the
# contiguous K in torch's fused kernel (5× faster at K = 32 768); below, the transposed Zᵀ (K × n) reduces over K
# across contiguous rows of length n, measured 4× faster at K = 10; in between the two were within the noise of this
# shared machine (K = 32–512)
ROW_MAJOR_K = 256


@dataclass(frozen=True)
class LossSpec:
    """What the closed-form gradient needs of a configuration's loss."""

    loss: str
    smoothing: float = 0.0  # ls
    target_scale: float = 1.0  # mse


def loss_gradient(Zt: torch.Tensor, y: torch.Tensor, spec: LossSpec,
                  true_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(Gᵀ = N·(∂ mean ℓ/∂Z)ᵀ, i.e. not yet divided by N, for transposed logits Zᵀ (B, K, N) and labels y (N,);
    the mean data loss (B,)). `true_index`: the flat positions y_i·N + i of the true classes (precomputed by
    GDStep)."""
    B, K, N = Zt.shape
    if true_index is None:
        true_index = y * N + torch.arange(N, device=Zt.device)
    if spec.loss == "mse":
        G = Zt.clone()
        G.view(B, -1)[:, true_index] -= spec.target_scale  # residual z − s·e_y
        return G, 0.5 * G.square().sum(1).mean(1)
    if spec.loss not in ("ce", "ls"):
        raise ValueError(f"no closed-form gradient for loss {spec.loss!r} (only {MANUAL_LOSSES})")
    a = spec.smoothing if spec.loss == "ls" else 0.0
    top = Zt.amax(1, keepdim=True)
    G = (Zt - top).exp_()
    total = G.sum(1, keepdim=True)
    lse = (top + total.log()).view(B, N)
    G /= total  # softmax
    data = (lse - Zt.view(B, -1)[:, true_index]).mean(1)
    if a:  # targets (1 − α)e_y + α/K: the uniform part adds −(α/K) Σ_k log p_k
        data = (1 - a) * data + a * (lse - Zt.mean(1)).mean(1)
        G -= a / K
    G.view(B, -1)[:, true_index] -= 1 - a
    return G, data


def true_class_ce(Z: torch.Tensor, p_y: torch.Tensor, z_y: torch.Tensor) -> torch.Tensor:
    """−log p_y of each row of Z (…, K), p = softmax over its last dimension: a p_y that underflowed (a logit gap
    beyond ~87 in float32, ~745 in float64) is recomputed exactly as logsumexp(z) − z_y (on a GPU for every row,
    without a host sync; on a CPU for those rows alone).
    >>> Z = torch.tensor([[0.0, 200.0]]); p = torch.softmax(Z, 1)
    >>> true_class_ce(Z, p[:, 0], Z[:, 0]).tolist()   # p_0 = e^{−200} underflows float32
    [200.0]
    """
    ce = -p_y.log()
    lost = p_y < 1e4 * torch.finfo(Z.dtype).tiny
    if Z.device.type != "cpu":  # no host sync per step: the exact log-sum-exp where it is needed
        return torch.where(lost, Z.logsumexp(-1) - z_y, ce)
    if bool(lost.any()):
        ce[lost] = Z[lost].logsumexp(-1) - z_y[lost]
    return ce


def loss_gradient_rows(Z: torch.Tensor, y: torch.Tensor, spec: LossSpec,
                       cols: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`loss_gradient` for row-major logits Z (B, n, K): (G = N·∂(mean ℓ)/∂Z (B, n, K), the mean data loss (B,)).
    Many classes: the softmax is torch's fused row kernel along the contiguous K (measured 5× faster than the
    max/exp/sum/divide over the transposed layout at K = 32 768), and the loss is −log p_y, with a p_y that
    underflowed (a logit gap beyond ~87 in float32) recomputed as log-sum-exp − z_y. `cols`: arange(n), precomputed.
    >>> Z = torch.randn(1, 5, 4, dtype=torch.float64); y = torch.tensor([0, 1, 2, 3, 0])
    >>> G, data = loss_gradient_rows(Z, y, LossSpec("ls", 0.1))
    >>> Gt, data_t = loss_gradient(Z.transpose(1, 2).contiguous(), y, LossSpec("ls", 0.1))
    >>> float((G - Gt.transpose(1, 2)).abs().max()) < 1e-15, abs(float(data - data_t)) < 1e-15
    (True, True)
    """
    B, n, K = Z.shape
    cols = torch.arange(n, device=Z.device) if cols is None else cols
    if spec.loss == "mse":
        G = Z.clone()
        G[:, cols, y] -= spec.target_scale  # residual z − s·e_y
        return G, 0.5 * G.square().sum(2).mean(1)
    if spec.loss not in ("ce", "ls"):
        raise ValueError(f"no closed-form gradient for loss {spec.loss!r} (only {MANUAL_LOSSES})")
    a = spec.smoothing if spec.loss == "ls" else 0.0
    G = torch.softmax(Z, 2)
    z_y = Z[:, cols, y]
    ce = true_class_ce(Z, G[:, cols, y], z_y)
    data = ce.mean(1)
    if a:  # targets (1 − α)e_y + α/K: the uniform part adds −(α/K) Σ_k log p_k = α(lse − mean z), lse = ce + z_y
        data = (1 - a) * data + a * (ce + z_y - Z.mean(2)).mean(1)
        G -= a / K
    G[:, cols, y] -= 1 - a
    return G, data


def _logits_t(H: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    Zt = (W[0] @ H[0].T)[None] if H.shape[0] == 1 else torch.bmm(W, H.transpose(1, 2))
    if b is not None:
        Zt += b[:, :, None]
    return Zt


def objective_and_grads(H: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, y: torch.Tensor, spec: LossSpec,
                        wd_W: torch.Tensor, wd_H: torch.Tensor, wd_b: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """H (B, N, d), W (B, K, d), b (B, K) or None, weight decays (B,). Returns (F (B,), data loss (B,),
    gradients {"H", "W"(, "b")})."""
    Gt, data = loss_gradient(_logits_t(H, W, b), y, spec)
    Gt /= H.shape[1]
    grads = {"W": torch.bmm(Gt, H) + wd_W[:, None, None] * W,
             "H": torch.bmm(Gt.transpose(1, 2), W) + wd_H[:, None, None] * H}
    reg = 0.5 * (wd_W * W.square().sum((1, 2)) + wd_H * H.square().sum((1, 2)))
    if b is not None:
        grads["b"] = Gt.sum(2) + wd_b[:, None] * b
        reg = reg + 0.5 * wd_b * b.square().sum(1)
    return data + reg, data, grads


@torch.no_grad()
def blocked_objective(H: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, y: torch.Tensor, spec: LossSpec,
                      wd_W: float, wd_H: float, wd_b: float, rows: int,
                      on_block: Callable[[slice, torch.Tensor], None] | None = None, *, N: int | None = None,
                      reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, float, float]:
    """(F, the mean data loss, ‖∇F‖) of one configuration (H (N, d), W (K, d), b (K,) or None) from the closed-form
    gradient, one block of `rows` samples at a time: ∇W = Σ_B G_Bᵀ H_B + λ_W W, ∇H_B = G_B W + λ_H H_B (its norm
    summed block by block, never stored), ∇b = Σ_B G_B 1 + λ_b b. `on_block(rows, Z_rows)` sees each block's
    logits (n_B × K): the measurements read them there instead of forming them again.

    Data parallel (ufm.distributed): H and y are this process's shard of the rows, `N` the number of samples of all
    shards and `reduce` a sum over the processes (an all-reduce returning the sum): the shards' Σ G_Bᵀ H_B, Σ G_B,
    data losses, ‖∇H_B‖² and ‖H_B‖² are summed in one packed reduction, so every process gets the whole F and ‖∇F‖.
    >>> H, W = torch.randn(5, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    >>> y = torch.tensor([0, 1, 2, 3, 0]); one = torch.ones(1, dtype=torch.float64)
    >>> F, data, grad = blocked_objective(H, W, None, y, LossSpec("ce"), 1e-2, 1e-2, 0.0, rows=2)
    >>> F0, data0, g = objective_and_grads(H[None], W[None], None, y, LossSpec("ce"), one * 1e-2, one * 1e-2, one * 0)
    >>> abs(F - float(F0)) < 1e-14, abs(grad - float(torch.cat([v.flatten() for v in g.values()]).norm())) < 1e-13
    (True, True)
    """
    N = len(y) if N is None else N
    data = 0.0
    # sharded: the shards' sums first, the weight decay of the replicated W and b once, after the reduction
    grad_W = W * wd_W if reduce is None else torch.zeros_like(W)
    grad_b = None if b is None else b * wd_b if reduce is None else torch.zeros_like(b)
    grad_H_sq = 0.0
    # row-major logits (n_B × K): the measurements' argmax and top-k run along the contiguous axis
    for block, Z in logit_blocks(H, W, b, rows=rows):
        n = block.stop - block.start
        G, block_data = loss_gradient_rows(Z[None], y[block], spec)
        if on_block is not None:
            on_block(block, Z)
        G = G[0].div_(N)  # ∂(mean ℓ)/∂Z of the block (n_B × K)
        data += float(block_data) * n / N
        grad_W.addmm_(G.T, H[block])
        grad_H_sq += float(torch.addmm(H[block], G, W, beta=wd_H).square().sum())
        if grad_b is not None:
            grad_b += G.sum(0)
    H_sq = float(H.square().sum())
    if reduce is not None:
        parts = [grad_W.reshape(-1)] + ([] if grad_b is None else [grad_b])
        packed = reduce(torch.cat(parts + [torch.tensor([data, grad_H_sq, H_sq], dtype=W.dtype, device=W.device)]))
        grad_W = packed[:W.numel()].view_as(W) + wd_W * W
        if grad_b is not None:
            grad_b = packed[W.numel():W.numel() + len(b)] + wd_b * b
        data, grad_H_sq, H_sq = packed[-3:].tolist()
    reg = 0.5 * (wd_W * float(W.square().sum()) + wd_H * H_sq)
    grad_sq = float(grad_W.square().sum()) + grad_H_sq
    if b is not None:
        reg += 0.5 * wd_b * float(b.square().sum())
        grad_sq += float(grad_b.square().sum())
    return data + reg, data, grad_sq ** 0.5


class GDStep:
    """Gradient descent on B configurations with learning rates and weight decays (B,) (tensors on the
    device of the parameters): `step(H, W, b)` moves them in place and returns the mean data loss (B,) at
    the iterate it started from. The per-run constants (decay factors, blocks of samples and the index of
    their true classes) are computed once.

    With one configuration H's weight decay is carried by a scalar: the tensor holds H/s, and a step
    multiplies s by (1 − ηλ_H) and adds −(η/s) G W to the tensor — an addmm with β = 1, measured 60 µs
    (10 %) faster than the fused β ≠ 1 update at K = 10, d = 512, N = 1000. `sync(H)` writes s into the
    tensor (call it before reading H); s is also written back whenever it leaves [1e-2, 1e2].

    `rows`: samples per block (default: what fits STEP_COPIES B×K×rows temporaries in the memory budget).

    Data parallel (ufm.distributed): `y` labels this process's shard of the rows of H, `N` counts the samples of all
    shards and `reduce` sums a tensor over the processes (an all-reduce that returns the sum). H's update is local;
    the W and b updates need η Gᵀ H, η Σ_i G_i and the data loss of all shards: they go in ONE packed reduction per
    step, [η Gᵀ H | η Σ G | loss], B(Kd + K + 1) values (2(P − 1)/P times that sent per process by a ring).
    >>> y = torch.tensor([0, 1, 1, 0]); one = torch.ones(1, dtype=torch.float64)
    >>> H, W = torch.randn(1, 4, 3, dtype=torch.float64), torch.randn(1, 2, 3, dtype=torch.float64)
    >>> H2, W2 = H.clone(), W.clone()
    >>> _ = GDStep(y, LossSpec("ce"), one, one * 1e-2, one * 1e-2, one * 0).step(H, W, None)
    >>> _ = GDStep(y, LossSpec("ce"), one, one * 1e-2, one * 1e-2, one * 0, rows=1).step(H2, W2, None)
    >>> float((W - W2).abs().max()) < 1e-15   # four blocks of one sample: the same step
    True
    """

    def __init__(self, y: torch.Tensor, spec: LossSpec, lr: torch.Tensor, wd_W: torch.Tensor, wd_H: torch.Tensor,
                 wd_b: torch.Tensor, K: int | None = None, rows: int | None = None, *, N: int | None = None,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        N, B = len(y) if N is None else N, len(lr)
        self.reduce = reduce
        K = int(y.max()) + 1 if K is None else K
        self.y, self.spec, self.N = y, spec, N
        if rows is None:
            rows = block_rows(B * K, itemsize=lr.element_size(), copies=STEP_COPIES, device=y.device)
        self.row_major = K >= ROW_MAJOR_K
        # each block: its rows and where its true classes are: the columns arange(n_B) of the row-major (B, n_B, K)
        # logits, or the flat positions y_i·n_B + i in the transposed (B, K, n_B) ones
        self.blocks = [(s, torch.arange(s.stop - s.start, device=y.device) + (0 if self.row_major else
                                                                               y[s] * (s.stop - s.start)))
                       for s in row_blocks(len(y), rows)]
        self.scale = (lr / N)[:, None, None]  # η/N: G = N·∂ℓ/∂Z leaves loss_gradient undivided
        self.decay_W = (1 - lr * wd_W)[:, None, None]
        self.decay_H = (1 - lr * wd_H)[:, None, None]
        self.decay_b = (1 - lr * wd_b)[:, None]
        self.beta_H = float(self.decay_H.flatten()[0]) if len(lr) == 1 else None
        self.s = 1.0  # one configuration: the tensor holds H/s

    @torch.no_grad()
    def sync(self, H: torch.Tensor) -> None:
        """Make the tensor hold H itself (after single-configuration steps)."""
        if self.s != 1.0:
            H.mul_(self.s)
            self.s = 1.0

    def _reduced(self, data, step_W, step_b, W, b):
        """The shards' η Gᵀ H, η Σ G and data losses summed over the processes: one packed reduction (a shard
        without rows contributes zeros)."""
        B, K = W.shape[0], W.shape[1]
        step_W = torch.zeros_like(W) if step_W is None else step_W
        data = torch.zeros(B, dtype=W.dtype, device=W.device) if data is None else data
        parts = [step_W.reshape(-1)]
        if b is not None:
            parts.append((torch.zeros_like(b) if step_b is None else step_b).reshape(-1))
        packed = self.reduce(torch.cat(parts + [data.reshape(-1)]))
        step_W = packed[:W.numel()].view_as(W)
        step_b = None if b is None else packed[W.numel():W.numel() + B * K].view(B, K)
        return packed[-B:], step_W, step_b

    @torch.no_grad()
    def step(self, H: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        single = self.beta_H is not None  # one configuration: plain products, H's decay in the scalar s
        s_new = self.s * self.beta_H if single else None
        data, step_W, step_b = None, None, None
        for rows, index in self.blocks:
            Hb = H[:, rows]
            if self.row_major:
                Z = (Hb[0] @ W[0].T)[None] if single else torch.bmm(Hb, W.transpose(1, 2))
                if single and self.s != 1.0:
                    Z *= self.s  # (H/s) Wᵀ · s
                if b is not None:
                    Z += b[:, None, :]
                G, block_data = loss_gradient_rows(Z, self.y[rows], self.spec, index)
                Gt = G.transpose(1, 2)  # the products below read Gᵀ as a view
            else:
                Zt = (W[0] @ Hb[0].T)[None] if single else torch.bmm(W, Hb.transpose(1, 2))
                if single and self.s != 1.0:
                    Zt *= self.s  # W (H/s)ᵀ · s
                if b is not None:
                    Zt += b[:, :, None]
                Gt, block_data = loss_gradient(Zt, self.y[rows], self.spec, index)
            share = (rows.stop - rows.start) / self.N
            data = block_data * share if data is None else data.add_(block_data, alpha=share)
            Gt *= self.scale  # η Gᵀ: the step sizes ride on the small K×n_B matrix
            # η Gᵀ H (of H/s when single), summed over the blocks before W moves
            part = (Gt[0] @ Hb[0])[None] if single else torch.bmm(Gt, Hb)
            step_W = part if step_W is None else step_W.add_(part)
            if b is not None:
                step_b = Gt.sum(2) if step_b is None else step_b.add_(Gt.sum(2))
            if single:  # H ← (1 − ηλ_H) H − η G W as s ← (1 − ηλ_H) s and H/s ← H/s − (η/s) G W (old W)
                Hb[0].addmm_(Gt[0].T, W[0], alpha=-1.0 / s_new)
            else:
                Hb.mul_(self.decay_H).baddbmm_(Gt.transpose(1, 2), W, alpha=-1.0)
        if self.reduce is not None:
            data, step_W, step_b = self._reduced(data, step_W, step_b, W, b)
        if b is not None:
            b.mul_(self.decay_b).sub_(step_b)
        if single:
            W.mul_(self.decay_W).sub_(step_W, alpha=self.s)  # η Gᵀ (H/s) · s = η Gᵀ H
            self.s = s_new
            if not 1e-2 <= self.s <= 1e2:
                self.sync(H)
            return data
        W.mul_(self.decay_W).sub_(step_W)
        return data


def gd_step(H: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, y: torch.Tensor, spec: LossSpec,
            lr: torch.Tensor, wd_W: torch.Tensor, wd_H: torch.Tensor, wd_b: torch.Tensor) -> torch.Tensor:
    """One GDStep, H left holding H (for a single step; loops should build the GDStep once)."""
    stepper = GDStep(y, spec, lr, wd_W, wd_H, wd_b, K=W.shape[1])
    data = stepper.step(H, W, b)
    stepper.sync(H)
    return data
