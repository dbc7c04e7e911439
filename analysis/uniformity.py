"""Hyperspherical uniformity of a set of directions (Liu et al., ICLR 2023; the Thomson and Tammes problems).

Rows x_1..x_K of X are normalized to the unit sphere S^{d−1} first. With c_ij = ⟨x̂_i, x̂_j⟩ and
r_ij = ‖x̂_i − x̂_j‖ = √(2 − 2c_ij):
- Riesz s-energy  E_s = Σ_{i<j} r_ij^{−s}  (s > 0; s = 1 is the Thomson problem's Coulomb energy),
  log energy E_0 = Σ_{i<j} −log r_ij; minimal energy = maximal uniformity;
- minimum pairwise angle θ_min = min_{i<j} ∠(x̂_i, x̂_j) (the Tammes problem maximizes it);
- the log-sum-exps log Σ_{i<j} r_ij^{−s} (`log_riesz_energy`: finite where E_s overflows) and log Σ_{i<j} e^{−t·r_ij}
  (`log_sum_exp_distance`: HUG's smooth minimum distance is −(1/t) times it);
- Gram-determinant uniformity log det(exp(−‖x̂_i − x̂_j‖²/(2σ²)))_ij (larger = more uniform; a Gaussian
  kernel keeps the determinant positive definite for distinct points).
Every function is differentiable (torch) and accepts numpy arrays.

Memory (DESIGN §8): the pairwise measures run over K×K tiles (`analysis.blocked.pair_tiles`, the tile side from the
memory budget), never holding the K×K matrix of cosines beyond it. `pair_potential` is the one tiled pass: the sum
(or log-sum-exp) over pairs of a potential a(c_ij) and, on request, its gradient with respect to the unit rows,
∂/∂u_i = Σ_j Φ_ij u_j with Φ_ij = a'(c_ij) (times the softmax weights for a log-sum-exp), accumulated tile by tile as
G[I] += Φ_tile U[J], G[J] += Φ_tileᵀ U[I]. The measures are an autograd Function whose backward recomputes the tiles
(nothing K×K is kept between forward and backward). The Gram determinant cannot be tiled: beyond the budget it is
refused (ValueError naming the K×K cost).

>>> import torch
>>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64, requires_grad=True)
>>> E = riesz_energy(X, 1.0); round(E.item(), 12)          # 1/√2 + 1/√2 + 1/2
1.914213562373
>>> E.backward(); X.grad.shape
torch.Size([3, 2])
"""

from __future__ import annotations

import math
from typing import Any

import torch

from analysis._arrays import as_features
from analysis.blocked import memory_budget, pair_tiles, tile_size

# distances below √(1e-30) = 1e-15 are clamped there (coincident points: a finite energy and a zero gradient)
R2_MIN = 1e-30
# tile-sized temporaries alive at once in one tile of `pair_potential` (cosines, r², terms, Φ, a mask)
TILE_COPIES = 5
POTENTIALS = ("riesz", "log", "lse_riesz", "lse_distance")
# `min_angle` keeps at most this many tied closest pairs (all K(K−1)/2 pairs tie in a zero or symmetric configuration)
MAX_TIED = 4096


def _rows(X: Any) -> torch.Tensor:
    """A 2-D float tensor; torch tensors pass through undetached, so the measures stay differentiable."""
    if isinstance(X, torch.Tensor):
        if X.dim() != 2:
            raise ValueError(f"expected a 2-D (K, d) array, got shape {tuple(X.shape)}")
        return X if X.is_floating_point() else X.double()
    return as_features(X)

UNIFORMITY_KINDS = ("energy", "gram", "maxgap")


def normalize_rows(X: Any, eps: float = 1e-12) -> torch.Tensor:
    """x̂_i = x_i/‖x_i‖ (rows of norm below eps are left at their tiny size, not divided by 0).
    >>> normalize_rows([[3.0, 4.0]]).tolist()
    [[0.6, 0.8]]
    """
    X = _rows(X)
    return X / X.norm(dim=1, keepdim=True).clamp_min(eps)


def pairwise_distances(U: torch.Tensor) -> torch.Tensor:
    """r_ij for i < j of unit rows, from 2 − 2cos, as a vector (row-major order of the pairs). Clamped at 1e-30 before
    the square root: coincident points then give r ≈ 1e-15 and a zero (not NaN) gradient through the clamp. The
    output itself has K(K−1)/2 entries: for large K use the tiled measures below, which never form it.
    >>> [round(r, 12) for r in pairwise_distances(torch.eye(2, dtype=torch.float64)).tolist()]   # √2
    [1.414213562373]
    """
    iu = torch.triu_indices(len(U), len(U), offset=1, device=U.device)
    # from the Gram matrix (K² numbers), not from gathered row pairs (K²·d/2: 2 GB at K = 1000, d = 512)
    cos = (U @ U.T)[iu[0], iu[1]]
    return (2 - 2 * cos).clamp_min(R2_MIN).sqrt()


def _terms(C: torch.Tensor, potential: str, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(a(c), a'(c)) on a tile of cosines (overwritten: it becomes r² = max(2 − 2c, R2_MIN)); a' is 0 where the clamp
    holds (as autograd through the clamp gives):
    riesz  a = r^{−p} (p > 0)   a' = p·r^{−p−2}        log           a = −log r   a' = 1/r²
    lse_riesz a = −p·log r     a' = p/r²              lse_distance  a = −p·r     a' = p/r"""
    r2 = C.mul_(-2.0).add_(2.0).clamp_min_(R2_MIN)
    if potential == "riesz":
        if p == 1:  # the Thomson default: rsqrt is faster than pow
            a = r2.rsqrt()
            phi = a / r2
        elif p == 2:
            a = r2.reciprocal()
            phi = a * a
            phi.mul_(2.0)
        else:
            a = r2.pow(-p / 2)
            phi = a / r2
            phi.mul_(p)
    elif potential in ("log", "lse_riesz"):
        scale = 1.0 if potential == "log" else p
        a = r2.log()
        a.mul_(-0.5 * scale)
        phi = r2.reciprocal()
        phi.mul_(scale)
    elif potential == "lse_distance":
        r = r2.sqrt()
        a = r * (-p)
        phi = r.reciprocal_()
        phi.mul_(p)
    else:
        raise ValueError(f"potential must be one of {POTENTIALS}, got {potential!r}")
    # coincident points (r² clamped): no force, as autograd through the clamp gives; on the CPU the mask pass is
    # skipped when nothing is clamped (a host check that would stall a GPU)
    if r2.device.type != "cpu" or float(r2.min()) <= R2_MIN:
        phi.masked_fill_(r2 <= R2_MIN, 0.0)
    return a, phi


def pair_potential(U: torch.Tensor, potential: str, p: float = 1.0, *, grad: bool = False, tile: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(V, ∂V/∂U) for unit rows U (K×d), computed tile by tile without autograd:
    V = Σ_{i<j} a(c_ij) for the potentials "riesz" (r^{−p}) and "log" (−log r), or V = log Σ_{i<j} e^{a(c_ij)} for
    "lse_riesz" (a = −p·log r: V = log E_p) and "lse_distance" (a = −p·r). The gradient is the Euclidean one with
    respect to the rows as given (project it onto the tangent spaces for the sphere's): ∂V/∂u_i = Σ_{j≠i} w_ij u_j
    with w = a'(c) (sum) or a'(c)·e^{a − V} (log-sum-exp, accumulated with a running maximum). V is a 0-d tensor on
    U's device (no host synchronization). `tile`: the tile side (default: what fits `TILE_COPIES` tile-sized
    temporaries in the memory budget).
    >>> U = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    >>> V, G = pair_potential(U, "riesz", 1.0, grad=True); float(V), G.tolist()    # r = 2; a' = r^{−3} = 1/8
    (0.5, [[-0.125, 0.0], [0.125, 0.0]])
    """
    if potential not in POTENTIALS:
        raise ValueError(f"potential must be one of {POTENTIALS}, got {potential!r}")
    K = U.shape[0]
    lse = potential.startswith("lse")
    if K < 2:  # no pairs: the empty sum, the empty log-sum-exp
        return U.new_full((), -math.inf if lse else 0.0), (torch.zeros_like(U) if grad else None)
    if tile is None:
        tile = tile_size(K, itemsize=U.element_size(), copies=TILE_COPIES, device=U.device)
    total = U.new_zeros(())
    top = U.new_full((), -math.inf)  # the running maximum of the log-sum-exp
    G = torch.zeros_like(U) if grad else None
    for I, J in pair_tiles(K, tile):
        C = U[I] @ U[J].T
        diagonal = I.start == J.start
        if diagonal:
            # the tile holds both (i, j) and (j, i): use the full symmetric tile with its diagonal removed, halved
            C.diagonal().fill_(-1.0)
        a, phi = _terms(C, potential, p)
        if diagonal:
            if lse:
                a.diagonal().fill_(-math.inf)
            else:
                a.diagonal().zero_()
            phi.diagonal().zero_()
        if lse:
            new_top = torch.maximum(top, a.max())
            rescale = torch.exp(top - new_top)
            w = torch.exp(a - new_top)
            part = w.sum() * (0.5 if diagonal else 1.0)
            total = total * rescale + part
            if grad:
                G.mul_(rescale)
                phi.mul_(w)
            top = new_top
        else:
            total = total + a.sum() * (0.5 if diagonal else 1.0)
        if grad:
            if diagonal:
                G[I] += phi @ U[I]  # the symmetric tile counts each pair once per endpoint
            else:
                G[I] += phi @ U[J]
                G[J] += phi.T @ U[I]
    if lse:
        value = top + torch.log(total)
        if grad:
            G.div_(total)
        return value, G
    return total, G


class _PairMeasure(torch.autograd.Function):
    """V(U) of `pair_potential` with a backward that recomputes the tiles (grad_U = grad_V · ∂V/∂U)."""

    @staticmethod
    def forward(ctx, U: torch.Tensor, potential: str, p: float) -> torch.Tensor:
        ctx.save_for_backward(U)
        ctx.potential, ctx.p = potential, p
        return pair_potential(U, potential, p)[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        (U,) = ctx.saved_tensors
        _, G = pair_potential(U, ctx.potential, ctx.p, grad=True)
        return grad_out * G, None, None


def _measure(X: Any, potential: str, p: float) -> torch.Tensor:
    return _PairMeasure.apply(normalize_rows(X), potential, float(p))


def riesz_energy(X: Any, s: float = 1.0) -> torch.Tensor:
    """E_s = Σ_{i<j} ‖x̂_i − x̂_j‖^{−s} (s > 0), or the log energy Σ −log ‖x̂_i − x̂_j‖ for s = 0 (tiled).
    >>> round(float(riesz_energy([[1.0, 0.0], [0.0, 1.0]], 2.0)), 12)      # r² = 2
    0.5
    """
    return _measure(X, "log", 0.0) if s == 0 else _measure(X, "riesz", s)


def log_riesz_energy(X: Any, s: float) -> torch.Tensor:
    """log E_s computed as a log-sum-exp of −s·log r_ij (finite for large s, where E_s itself overflows; tiled).
    >>> round(float(log_riesz_energy([[1.0, 0.0], [-1.0, 0.0]], 400.0)), 6) == round(-400 * math.log(2), 6)
    True
    """
    return _measure(X, "lse_riesz", s)


def log_sum_exp_distance(X: Any, t: float) -> torch.Tensor:
    """log Σ_{i<j} exp(−t·‖x̂_i − x̂_j‖) (tiled): −(1/t) times it is a smooth minimum distance (HUG's max-gap measure).
    >>> round(float(log_sum_exp_distance([[1.0, 0.0], [-1.0, 0.0]], 3.0)), 12)
    -6.0
    """
    return _measure(X, "lse_distance", t)


def min_angle(X: Any) -> torch.Tensor:
    """θ_min in radians: the smallest angle between two of the directions. The closest pairs are found tile by tile;
    the angle is then recomputed from them with autograd (ties share the gradient, as torch's min does; at most
    MAX_TIED of them are kept, so that a symmetric configuration, whose pairs may all tie, stays within O(K) memory).
    >>> round(math.degrees(float(min_angle([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))), 9)
    45.0
    """
    U = normalize_rows(X)
    K = len(U)
    if K < 2:
        raise ValueError(f"the minimum angle needs at least 2 rows, got {K}")
    with torch.no_grad():
        V = U.detach()
        best = -math.inf
        pairs: list[torch.Tensor] = []
        for I, J in pair_tiles(K, tile_size(K, itemsize=V.element_size(), copies=3, device=V.device)):
            C = V[I] @ V[J].T
            if I.start == J.start:
                C.triu_(1).add_(torch.tril(torch.full_like(C, -math.inf)))  # keep the pairs i < j
            m = float(C.max())
            if m < best:
                continue
            if m > best:
                best, pairs = m, []
            if sum(len(p) for p in pairs) >= MAX_TIED:
                continue  # enough of the tied closest pairs for the value and a shared gradient
            idx = (C == m).nonzero()[:MAX_TIED]
            pairs.append(torch.stack([idx[:, 0] + I.start, idx[:, 1] + J.start], 1))
        ij = torch.cat(pairs)
    c = (U[ij[:, 0]] * U[ij[:, 1]]).sum(1)
    r = (2 - 2 * c).clamp_min(R2_MIN).sqrt()
    return 2 * torch.asin((r.min() / 2).clamp(max=1.0))


def gram_log_det(X: Any, sigma: float = 1.0) -> torch.Tensor:
    """log det K with K_ij = exp(−‖x̂_i − x̂_j‖²/(2σ²)): larger when the directions are more uniform. The determinant
    needs the whole K×K kernel (it does not split into tiles): refused (ValueError) where its K×K temporaries exceed
    the memory budget (`analysis.blocked`).
    >>> round(float(gram_log_det(torch.eye(2, dtype=torch.float64), 1.0)), 12)   # log(1 − e^{−2})
    -0.145413457869
    """
    U = normalize_rows(X)
    check_gram_fits(len(U), U.element_size(), U.device)
    sq = (2 - 2 * U @ U.T).clamp_min(0)
    return torch.logdet(torch.exp(-sq / (2 * sigma**2)))


GRAM_COPIES = 4  # K×K temporaries of `gram_log_det`: cosines, distances, the kernel, the factorization


def check_gram_fits(K: int, itemsize: int = 8, device: Any = None) -> None:
    """ValueError naming the cost where the Gram-determinant measure's K×K temporaries exceed the memory budget.
    >>> check_gram_fits(100)
    """
    need = GRAM_COPIES * K * K * itemsize
    have = memory_budget(device)
    if need > have:
        raise ValueError(f"the Gram-determinant measure needs the whole K×K kernel (K = {K}: {GRAM_COPIES} K×K "
                         f"matrices, {need / 2**30:.3g} GiB) beyond the memory budget of {have / 2**30:.3g} GiB "
                         "(UFM_MEMORY_BUDGET): use the energy or maxgap measure, or raise the budget")


def etf_riesz_energy(K: int, s: float = 1.0) -> float:
    """E_s of the simplex ETF: every pairwise distance is √(2K/(K−1))."""
    r = math.sqrt(2 * K / (K - 1))
    pairs = K * (K - 1) / 2
    return pairs * (-math.log(r) if s == 0 else r ** (-s))


def align_configuration(points: Any, reference: Any, restarts: int = 64, iterations: int = 30,
                        seed: int = 0) -> tuple[torch.Tensor, float]:
    """The rotation (or reflection) and relabelling of `reference` (K×d) closest to `points` (K×d), both
    normalized to the sphere: iterated closest point — match the points (linear assignment), then the
    orthogonal Procrustes solution — from `restarts` random orthogonal starts. Returns (the reference
    moved onto `points`, row for row, and the RMS distance between them). For comparing a learned
    configuration with a code, which is defined only up to an orthogonal map and a permutation."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    P = normalize_rows(points).double().cpu().numpy()
    R = normalize_rows(reference).double().cpu().numpy()
    rng = np.random.default_rng(seed)
    best, best_rms = R, math.inf
    d = P.shape[1]
    for _ in range(restarts):
        Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
        for _ in range(iterations):
            moved = R @ Q
            rows, cols = linear_sum_assignment(((P[:, None, :] - moved[None, :, :]) ** 2).sum(2))
            U, _, Vt = np.linalg.svd(R[cols].T @ P)  # Procrustes: min ‖R_perm Q − P‖ over orthogonal Q
            Q = U @ Vt
        rows, cols = linear_sum_assignment(((P[:, None, :] - (R @ Q)[None, :, :]) ** 2).sum(2))
        aligned = (R @ Q)[cols]
        rms = float(np.sqrt(((aligned - P) ** 2).sum(1).mean()))
        if rms < best_rms:
            best, best_rms = aligned, rms
    return torch.as_tensor(best), best_rms
