"""Timing helpers shared by the benchmarks: best-of-n wall clock, a log-log slope, and the matrix-product floor of
a step."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch


def best_time(f: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` calls of f (after one warm-up call), in seconds."""
    f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def loglog_slope(xs: Sequence[float], ts: Sequence[float]) -> float:
    """Least-squares slope of log t against log x: time ∝ x^slope."""
    lx, lt = [math.log(x) for x in xs], [math.log(t) for t in ts]
    mx, mt = sum(lx) / len(lx), sum(lt) / len(lt)
    return sum((a - mx) * (b - mt) for a, b in zip(lx, lt, strict=True)) / sum((a - mx) ** 2 for a in lx)


def product_floor(shapes: Sequence[tuple[int, int, int]], device: str, steps: int) -> Callable[[], None]:
    """`steps` times the three products per layer of shape (N, fan_in) × (fan_out, fan_in)ᵀ — forward X Mᵀ and the
    two of backward, G M and Gᵀ X — on random tensors: a step's floor (a one-layer UFM: the one shape (N, d, K))."""
    mats = [(torch.randn(N, i, device=device), torch.randn(o, i, device=device), torch.randn(N, o, device=device))
            for N, i, o in shapes]

    def run() -> None:
        for _ in range(steps):
            for X, M, G in mats:
                X @ M.T
                G @ M
                G.T @ X
        if device == "cuda":
            torch.cuda.synchronize()
    return run


def blocked_floor(H: torch.Tensor, W: torch.Tensor, blocks: Sequence[slice]) -> Callable[[], None]:
    """A blocked step's floor: over the same blocks of rows, its three matrix products Z_B = H_B Wᵀ, G_Bᵀ H_B and
    G_B W, on a random G of the block's shape (a one-layer UFM's step with the logits in blocks, DESIGN §8)."""
    G = torch.randn(max(b.stop - b.start for b in blocks), W.shape[0], device=H.device, dtype=H.dtype)

    def run() -> None:
        for rows in blocks:
            Hb, Gb = H[rows], G[: rows.stop - rows.start]
            Hb @ W.T
            Gb.T @ Hb
            Gb @ W
        if H.device.type == "cuda":
            torch.cuda.synchronize()
    return run
