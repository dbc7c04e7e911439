"""Pairwise quantities of K rows in K×K tiles (DESIGN §8): the statistics over the K(K−1)/2 pairs i < j that the
NC metrics report (cosines, distances between directions, CDNV) and the GNC measures (Riesz energy, minimum
angle), computed tile by tile within the memory budget of `analysis.blocked`, never as one K×K matrix.

With x̂_k = x_k/‖x_k‖, c_ij = ⟨x̂_i, x̂_j⟩ and r_ij = ‖x̂_i − x̂_j‖ = √(2 − 2c_ij):
- mean and population variance of c_ij (Papyan et al.'s equiangularity is its standard deviation), the mean of
  |c_ij + 1/(K−1)| (max-angle), the variances of r_ij and of log r_ij (rhubarbwu/neural-collapse's `nc2g_dist`
  and `nc2g_log`, Liu et al. 2023), the Riesz s-energy Σ r_ij^{−s} (s = 0: Σ −log r_ij) and min r_ij (the
  minimum angle is 2·asin(r_min/2));
- given per-row variances Var_k, the class-distance normalized variance (Var_i + Var_j)/(2‖x_i − x_j‖²) (CDNV,
  Galanti et al. 2022) from the same tiles, since ‖x_i − x_j‖² = ‖x_i‖² + ‖x_j‖² − 2⟨x_i, x_j⟩.
Means and variances come from float64 sums Σx and Σx² over the tiles (fast reductions, no tile-sized temporaries
beyond two reused buffers); Σr² = Σ(2 − 2c) is exact from the cosines. The spreads of these quantities are never
many orders below their means where they are not 0 (and a variance that is 0 comes out 0 to rounding: 1e-16), so
E[x²] − E[x]² keeps ~13 digits of them (the two sides of analysis.metrics agree to 1e-10, tested).

A caller that needs the NC and the GNC measures of one classifier W (ufm's measurements) computes its
`cosine_pair_stats` once and hands it to both (`nc_metrics(..., pairs_W=)`, `gnc_metrics(..., pairs_W=)`).

>>> import torch
>>> X = torch.eye(3, dtype=torch.float64) - 1 / 3          # a simplex ETF in R^3: every cosine is −1/2
>>> st = cosine_pair_stats(X)
>>> round(st.cos_mean, 12), round(st.cos_var, 12), round(st.maxangle, 12)
(-0.5, 0.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from analysis.blocked import pair_tiles, tile_size, upper_mask

# tile-sized float64 temporaries alive at once in `cosine_pair_stats`: three reused buffers (products, scratch,
# powers), a diagonal tile's masked copies of two of them, its mask
PAIR_COPIES = 6


def upper_pairs(K: int, *, copies: int = PAIR_COPIES, itemsize: int = 8, device=None,
                tile: int | None = None) -> Iterator[tuple[slice, slice, torch.Tensor | None]]:
    """(I, J, mask) over tiles covering the pairs i < j once; `mask` selects them inside a diagonal tile (None:
    every pair of the tile counts). The tile side keeps `copies` tile-sized temporaries within the budget.
    >>> sum(int(m.sum()) if m is not None else (I.stop - I.start) * (J.stop - J.start)
    ...     for I, J, m in upper_pairs(7, tile=3))
    21
    """
    tile = tile_size(K, itemsize=itemsize, copies=copies, device=device) if tile is None else tile
    for I, J in pair_tiles(K, tile):
        yield I, J, upper_mask(I, J, device)


@dataclass
class CosinePairStats:
    """Statistics over the pairs i < j of the directions of K rows (module docstring). `energy` is the Riesz
    s-energy of the exponent asked for; `coincident` says that two directions coincide (r_ij = 0: the log
    distances are undefined); `cdnv_mean`, `cdnv_max` are NaN unless variances were given."""

    pairs: int
    cos_mean: float
    cos_var: float
    maxangle: float  # mean |c_ij + 1/(K−1)|
    dist_var: float
    log_dist_var: float
    energy: float
    min_dist: float
    coincident: bool
    cdnv_mean: float = math.nan
    cdnv_max: float = math.nan

    @property
    def min_angle(self) -> float:
        """The smallest angle between two of the directions, in radians."""
        return 2 * math.asin(min(1.0, self.min_dist / 2))



def cosine_pair_stats(X: torch.Tensor, s: float = 1.0, *, variances: torch.Tensor | None = None,
                      tile: int | None = None) -> CosinePairStats:
    """`CosinePairStats` of the rows of X (K×d; computed in float64 on X's device), tile by tile; with `variances`
    (K,) also the CDNV of the rows taken as class means. For the energy and the minimum angle the distances are
    clamped at 1e-15 (r² at `analysis.uniformity.R2_MIN`), so they equal that module's `riesz_energy` and
    `min_angle`. A zero row has cosine 0 with every other (as `normalize_rows` leaves it at 0).
    >>> import torch
    >>> st = cosine_pair_stats(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), s=1.0)
    >>> st.pairs, round(st.energy, 12), round(math.degrees(st.min_angle), 9)   # 2/√2 + 1/2
    (3, 1.914213562373, 90.0)
    """
    return _pair_stats(X, s, variances, tile)


class _Sums:
    """Count, Σx and Σx² of values arriving in pieces (in float64); the variance Σx²/n − (Σx/n)² is exact enough for
    the quantities here, whose spread is never many orders below their mean where it matters (K > d + 1, or the
    values coincide and the variance is 0 to rounding)."""

    def __init__(self) -> None:
        self.count, self.s1, self.s2 = 0, 0.0, 0.0

    def add(self, n: int, s1: float, s2: float) -> None:
        self.count, self.s1, self.s2 = self.count + n, self.s1 + s1, self.s2 + s2

    def add_values(self, x: torch.Tensor) -> None:
        flat = x.reshape(-1)
        self.add(flat.numel(), float(flat.sum()), float(torch.dot(flat, flat)))

    @property
    def mean(self) -> float:
        return self.s1 / self.count if self.count else math.nan

    @property
    def var(self) -> float:
        if not self.count:
            return math.nan
        m = self.s1 / self.count
        return max(0.0, self.s2 / self.count - m * m)


def _pair_stats(X: torch.Tensor, s: float, variances: torch.Tensor | None, tile: int | None) -> CosinePairStats:
    X = X.double()
    K = X.shape[0]
    sq = X.square().sum(1)
    # cosines as ⟨x_i, x_j⟩/(‖x_i‖‖x_j‖), not products of normalized rows: two equal rows then give exactly 1
    # (distance 0, log undefined)
    norms = sq.sqrt().clamp_min(1e-12)
    var = None if variances is None else variances.double().to(X.device)
    cos_m, dist_m, log_m = _Sums(), _Sums(), _Sums()
    absdev = energy = cdnv_total = 0.0
    max_cos, cdnv_max, coincident = -math.inf, -math.inf, False
    buffers: dict[str, torch.Tensor] = {}

    def buffer(name: str, shape: tuple[int, int]) -> torch.Tensor:
        # tile-sized scratch reused across tiles (allocating a fresh tile costs as much as a pass over it)
        b = buffers.get(name)
        if b is None or b.numel() < shape[0] * shape[1]:
            b = buffers[name] = torch.empty(shape[0] * shape[1], dtype=torch.float64, device=X.device)
        return b[: shape[0] * shape[1]].view(shape)

    for I, J, mask in upper_pairs(K, device=X.device, tile=tile):
        shape = (I.stop - I.start, J.stop - J.start)
        dots = torch.mm(X[I], X[J].T, out=buffer("dots", shape))
        if var is not None:
            d2 = torch.add(sq[I, None], sq[None, J], out=buffer("tmp", shape)).sub_(dots, alpha=2).clamp_min_(0)
            v = torch.add(var[I, None], var[None, J], out=buffer("pow", shape)).div_(d2.mul_(2))
            v = v if mask is None else v[mask]
            cdnv_total += float(v.sum())
            top = float(v.max()) if v.numel() else -math.inf  # NaN propagates, as it does through the sum
            cdnv_max = math.nan if math.isnan(top) or math.isnan(cdnv_max) else max(cdnv_max, top)
        c = dots.div_(torch.outer(norms[I], norms[J], out=buffer("tmp", shape)))
        if mask is not None:
            c = c[mask]
        if c.numel() == 0:
            continue
        flat = c.reshape(-1)
        n = flat.numel()
        c1, c2 = float(flat.sum()), float(torch.dot(flat, flat))
        cos_m.add(n, c1, c2)
        max_cos = max(max_cos, float(flat.max()))
        tmp = buffer("tmp", (1, n)).view(-1)
        absdev += float(torch.add(flat, 1.0 / (K - 1), out=tmp).abs_().sum())
        r = torch.mul(flat, -2.0, out=tmp).add_(2.0).clamp_min_(0).sqrt_()
        # Σr² = Σ(2 − 2c): from the cosines' sum, exactly as the definition's r² (no pass)
        dist_m.add(n, float(r.sum()), 2.0 * n - 2.0 * c1)
        if float(r.min()) == 0:
            coincident = True
        r.clamp_min_(1e-15)  # the energy's clamp (uniformity.pairwise_distances)
        if s != 0:
            powered = torch.reciprocal(r, out=buffer("pow", (1, n)).view(-1)) if s == 1 else torch.pow(r, -s)
            energy += float(powered.sum())
        if s == 0 or not coincident:
            log_r = r.log_()
            if s == 0:
                energy -= float(log_r.sum())
            if not coincident:
                log_m.add_values(log_r)
    P = cos_m.count
    min_dist = max(math.sqrt(max(0.0, 2.0 - 2.0 * max_cos)), 1e-15) if P else math.inf
    cdnv = (cdnv_total / P, cdnv_max) if var is not None and P else (math.nan, math.nan)
    return CosinePairStats(P, cos_m.mean, cos_m.var, absdev / P if P else math.nan, dist_m.var,
                           math.nan if coincident else log_m.var, energy, min_dist, coincident, *cdnv)


def cdnv_pairs(variances: torch.Tensor, means: torch.Tensor, *, tile: int | None = None) -> tuple[float, float]:
    """(mean, max) over i < j of (Var_i + Var_j)/(2‖μ_i − μ_j‖²) (Galanti et al. 2022), tile by tile. Coincident
    means give inf (NaN when neither class has spread).
    >>> cdnv_pairs(torch.tensor([1.0, 0.0]), torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
    (0.03125, 0.03125)
    """
    st = cosine_pair_stats(means, variances=variances, tile=tile)
    return st.cdnv_mean, st.cdnv_max
