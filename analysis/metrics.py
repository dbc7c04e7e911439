"""Neural-collapse metrics NC1–NC4 and their companions (Papyan, Han & Donoho 2020; DESIGN §5.1).

With class means μ_k, global mean μ_G, centered means M (K×d, rows μ_k − μ_G), classifier W (K×d):

    Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ,   Σ_B = (1/K) Mᵀ M
    NC1 = tr(Σ_W Σ_B^†) / K
    NC2 = ‖ MMᵀ/‖MMᵀ‖_F − E ‖_F,   E = (I_K − 11ᵀ/K)/√(K−1)  (unit-norm simplex-ETF Gram)
    NC3 = ‖ WMᵀ/‖WMᵀ‖_F − E ‖_F
    NC4 = fraction of samples whose argmax_k (Wh + b)_k differs from argmin_k ‖h − μ_k‖

Cost O(K·d·N) and no d×d matrix. NC1 is computed on the K×K side: with A = MMᵀ and the K×K matrix
G = M Σ_W Mᵀ = (1/N) Σ_i P_iᵀ P_i, where P_i = (h_i − μ_{y_i}) Mᵀ are the projections of the
within-class deviations on the centered means,

    tr(Σ_W Σ_B^†)/K = tr(Σ_W (MᵀM)^†) = tr(Σ_W Mᵀ (A^†)² M) = tr(G (A^†)²),

because (MᵀM)^† = Mᵀ (A^†)² M (write M = U S Vᵀ: both sides equal V S⁻² Vᵀ). The pseudo-inverse is
taken on the K×K side: eigenvalues of A below `rtol`·λ_max count as zero, exactly as a pseudo-inverse
of the d×d matrix Σ_B with the same relative cut-off would do (the nonzero spectra agree).

NC4 needs no second product either: with δ_i = h_i − μ_{y_i},
‖h_i − μ_k‖² = ‖δ_i‖² − 2(P_ik − P_{i,y_i}) + ‖μ_k − μ_{y_i}‖², so the nearest mean is
argmin_k (D_{y_i,k} − 2 P_ik) with D the K×K squared distances between means; and the logits are
δ_i Wᵀ + (μ_{y_i} Wᵀ) + b. One product of the deviations with [M; W]ᵀ gives everything.

Global mean under class imbalance: `global_mean="samples"` (default) takes μ_G as the mean of all
samples (Papyan et al.), `"classes"` as the unweighted mean of the class means (then Σ_B is the
covariance of the means and every class counts equally). They coincide for balanced classes. Σ_W is
always the sample-weighted within-class covariance of the definition above.

Variants used by other papers, under their own names: `nc2_W` (ETF distance of WWᵀ, as in Zhu et al.
2021's code), `self_duality` ‖W/‖W‖_F − M/‖M‖_F‖_F and `self_duality_sq` (its square: Papyan's and
HAFrame's NC3), equinorm (std/mean of the norms), equiangularity (std of pairwise cosines), max-angle
(mean |cos + 1/(K−1)|). Standard deviations and variances are population ones (ddof = 0).

Measures of the other NC libraries (rhubarbwu/neural-collapse; Zhu et al. 2021's code):

- `cdnv`, `cdnv_max`: mean and max over pairs i < j of the class-distance normalized variance
  V_ij = (Var_i + Var_j) / (2‖μ_i − μ_j‖²), Var_k = (1/n_k) Σ_{i in class k} ‖h_i − μ_k‖² (the trace of
  class k's covariance) (Galanti, György & Hutter 2022, "On the role of neural collapse in transfer
  learning"; rhubarbwu's `variability_cdnv`). 0 once every class collapses; inf if two means coincide.
- `bias_relation` = ‖v‖₂ with v = Wμ_G + b (b = 0 when no bias is given): the quantity Zhu et al.'s code
  plots as "NC4" (Zhu et al. 2021, "A geometric analysis of neural collapse with unconstrained
  features"). v is the mean logit vector (over the samples, for the default μ_G). At their global
  optimum b = b·1 and μ_G = 0, with b = 0 when the bias is penalized, so there ‖v‖ = 0.
- `bias_relation_centered` = ‖v − mean(v)·1‖₂ / (‖WMᵀ‖_F/√K): the part of v that is not constant across
  classes, which vanishes at the optimum with or without a bias penalty (with a free bias ‖v‖ need not:
  CE is shift-invariant, and the MSE optimum has b = 1/K), in units of the RMS norm ‖W(μ_k − μ_G)‖ of
  the means' centered logit vectors (scale-free).
- `distance_var_means` = Var_{i<j} ‖μ̂_i − μ̂_j‖ with μ̂_k = (μ_k − μ_G)/‖μ_k − μ_G‖, the variance of the
  pairwise distances of the normalized centered means (rhubarbwu's `nc2g_dist`, the generalized-NC
  uniformity of Liu et al. 2023); 0 for a simplex ETF or any equidistant set.
  `log_distance_var_means` = Var_{i<j} log ‖μ̂_i − μ̂_j‖ (rhubarbwu's `nc2g_log`, the log kernel).
- `distance_var_W`, `log_distance_var_W`: the same for the rows of W (not centered, as for equinorm_W).

Every variance above is over the K(K−1)/2 pairs i < j. CDNV needs only the per-class sums of squared
deviations (K numbers of the second pass) and the K×K distances of the means: it is exact under
streaming and `reduce` like everything else.

Precision: class sums, the K×K and the K×d quantities are computed in float64 (the first pass sums
in float64 whatever the features' dtype, so the means are those of float64 features); the products of
the N-sized second pass run in float32 (float64 for float64 features; half precision is upcast) on the
features' device, and the rounding of the means to that dtype is corrected exactly (it is a
per-class constant shift of the deviations).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from analysis._arrays import as_features, as_labels, as_tensor

GLOBAL_MEANS = ("samples", "classes")
DEFAULT_RTOL = 1e-10
# rows per chunk of the second pass: keeps the chunk of deviations (chunk × d) near cache size
_CHUNK_ELEMENTS = 1 << 20

METRIC_KEYS = (
    "nc1", "nc2", "nc3", "nc4", "accuracy", "ncc_accuracy", "nc2_W", "self_duality",
    "self_duality_sq", "equinorm_means", "equinorm_W", "equiangular_means", "equiangular_W",
    "maxangle_means", "maxangle_W", "tr_sigma_W", "tr_sigma_B", "rank_means",
    "cdnv", "cdnv_max", "bias_relation", "bias_relation_centered", "distance_var_means",
    "log_distance_var_means", "distance_var_W", "log_distance_var_W",
)


def add_fields(a: Any, b: Any) -> Any:
    """Field-wise sum of two dataclasses of tensors of one type (additive statistics of two batches)."""
    return type(a)(*(x + y for x, y in zip(vars(a).values(), vars(b).values(), strict=True)))


def map_fields(f: Callable[[torch.Tensor], torch.Tensor], stats: Any) -> Any:
    """A dataclass of tensors with f applied to every field (e.g. a sum over the processes of a data-parallel
    run)."""
    return type(stats)(*(f(t) for t in vars(stats).values()))


@dataclass
class ClassSums:
    """First-pass statistics: per-class sample counts and feature sums. Additive over batches."""

    counts: torch.Tensor  # (K,) int64
    sums: torch.Tensor  # (K, d) float64

    __add__ = add_fields


@dataclass
class DeviationStats:
    """Second-pass statistics. Additive over batches."""

    proj_gram: torch.Tensor  # (K, K) float64: Σ_i P_iᵀ P_i
    within_ss: torch.Tensor  # (K,) float64: Σ_{i in class k} ‖δ'_i‖², δ'_i = h_i − fl(μ_k)
    mismatches: torch.Tensor  # () int64: samples with classifier decision ≠ nearest class mean
    correct: torch.Tensor  # () int64: samples with classifier decision = label
    ncc_correct: torch.Tensor  # () int64: samples whose nearest class mean is their own

    __add__ = add_fields


def _chunk_rows(d: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(d, 1))


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Products run in float64 for float64 features and in float32 otherwise (half precision is upcast)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def class_sums(H: Any, y: Any, K: int) -> ClassSums:
    """Per-class counts and feature sums of one batch (scatter-add, one pass over H).

    Summed in float64 whatever the features' dtype (chunks of rows are converted one at a time), so
    the sums of float32 or half-precision features are those of the same features in float64. Summing
    in float32 instead errs by ~1e-7 of the features' magnitude, not of their spread: with an offset of
    1e4 the means moved by ~1e-3 and NC1 by 1e-3 relative (an error the second pass cannot see).
    """
    H = as_features(H)
    y = as_labels(y, device=H.device)
    _check_batch(H, y, K)
    d = H.shape[1]
    sums = torch.zeros(K, d, dtype=torch.float64, device=H.device)
    chunk = max(_chunk_rows(d), 8 * K)
    buf = None if H.dtype == torch.float64 else torch.empty(min(chunk, H.shape[0]), d, dtype=torch.float64,
                                                            device=H.device)
    for start in range(0, H.shape[0], chunk):
        rows = H[start:start + chunk]
        if buf is not None:
            rows = buf[:rows.shape[0]].copy_(rows)
        sums.index_add_(0, y[start:start + chunk], rows)
    return ClassSums(torch.bincount(y, minlength=K), sums)


def class_means(H: Any, y: Any, K: int) -> torch.Tensor:
    """μ_k = mean of the features of class k, a (K, d) tensor in the features' dtype (summed in float64)."""
    s = class_sums(H, y, K)
    _check_nonempty(s.counts)
    return (s.sums / s.counts.unsqueeze(1)).to(as_features(H).dtype)


@dataclass
class _Geometry:
    """What the second pass needs from the first: means, centered means, and their K×K Grams."""

    means: torch.Tensor  # (K, d) float64
    mu_G: torch.Tensor  # (d,) float64, the global mean (of the samples or of the class means)
    centered: torch.Tensor  # (K, d) float64, M
    gram: torch.Tensor  # (K, K) float64, A = MMᵀ
    sq_dist: torch.Tensor  # (K, K) float64, ‖μ_j − μ_k‖²
    W: torch.Tensor | None  # (K, d) float64
    b: torch.Tensor | None  # (K,) float64
    # the second pass runs in a working dtype (see _work_dtype): the means and directions [M; W]
    # rounded to it, and e_k Vᵀ with e_k = μ_k − fl(μ_k), the per-class shift that rounding causes
    means_work: torch.Tensor  # (K, d)
    V_work: torch.Tensor  # (K or 2K, d)
    shift: torch.Tensor  # (K, K or 2K) float64


def _geometry(sums: ClassSums, W: Any, b: Any, global_mean: str, dtype: torch.dtype,
              project_W: bool = True) -> _Geometry:
    if global_mean not in GLOBAL_MEANS:
        raise ValueError(f"global_mean must be one of {GLOBAL_MEANS}, got {global_mean!r}")
    _check_nonempty(sums.counts)
    counts = sums.counts.double()
    total = sums.sums.double()
    means = total / counts.unsqueeze(1)
    # computing μ_G from the same float64 sums keeps Σ_k n_k (μ_k − μ_G) = 0 to float64 precision
    mu_G = total.sum(0) / counts.sum() if global_mean == "samples" else means.mean(0)
    M = means - mu_G
    A = M @ M.T
    diag = torch.diagonal(A)
    sq_dist = (diag[:, None] + diag[None, :] - 2 * A).clamp_min(0)
    K, d = M.shape
    W64 = b64 = None
    if W is not None:
        W64 = as_tensor(W, device=M.device).double()
        if W64.shape != (K, d):
            raise ValueError(f"W must have shape (K, d) = {(K, d)}, got {tuple(W64.shape)}")
        if b is not None:
            b64 = as_tensor(b, device=M.device).double().reshape(-1)
            if b64.shape != (K,):
                raise ValueError(f"b must have shape (K,) = {(K,)}, got {tuple(b64.shape)}")
    work = _work_dtype(dtype)
    means_work = means.to(work)
    V_work = (M if W64 is None or not project_W else torch.cat([M, W64])).to(work)
    shift = (means - means_work.double()) @ V_work.double().T
    return _Geometry(means, mu_G, M, A, sq_dist, W64, b64, means_work, V_work, shift)


def deviation_stats(H: Any, y: Any, geom: _Geometry, logits: Any = None) -> DeviationStats:
    """Second pass over one batch: projections of h_i − μ_{y_i} on [M; W], chunk by chunk (on M alone when the
    batch's logits HWᵀ + b are given: the classifier's decisions are their argmax)."""
    H = as_features(H)
    y = as_labels(y, device=H.device)
    K, d = geom.centered.shape
    _check_batch(H, y, K)
    dev = H.device
    V, means, shift, work = geom.V_work, geom.means_work, geom.shift, geom.V_work.dtype
    # δ'_i = h_i − fl(μ_k) uses the means rounded to the working dtype; the projection is
    # P_i = δ'_i Vᵀ − e_k Vᵀ: subtract that per-class constant (geom.shift) in float64. The means μ_k
    # themselves are float64 sums (class_sums), so Σ_{i in k} δ'_i = n_k e_k, which _finalize uses.
    mean_logits = None
    if geom.W is not None and logits is None:
        mean_logits = means.double() @ geom.W.T  # fl(μ_j) · w_k: logits = δ' Wᵀ + fl(μ_y) Wᵀ + b
        if geom.b is not None:
            mean_logits = mean_logits + geom.b
    gram = torch.zeros(K, K, dtype=torch.float64, device=dev)
    within_ss = torch.zeros(K, dtype=torch.float64, device=dev)
    zero = torch.zeros((), dtype=torch.int64, device=dev)
    mismatches, correct, ncc_correct = zero.clone(), zero.clone(), zero.clone()
    chunk = _chunk_rows(d)
    # preallocated buffers: the gathered means are overwritten by the deviations in place, so the
    # deviations stay in cache for the product that follows (measured 2.7x faster than H[c] - means[y[c]])
    delta_buf = torch.empty(min(chunk, H.shape[0]), d, dtype=work, device=dev)
    proj_buf = torch.empty(min(chunk, H.shape[0]), V.shape[0], dtype=work, device=dev)
    for start in range(0, H.shape[0], chunk):
        yc = y[start:start + chunk]
        rows = yc.shape[0]
        delta, proj = delta_buf[:rows], proj_buf[:rows]
        torch.index_select(means, 0, yc, out=delta)
        torch.sub(H[start:start + chunk], delta, out=delta)
        torch.mm(delta, V.T, out=proj)
        # ‖δ'‖² per row in the working dtype (a float64 copy of the chunk would cost a pass), summed
        # per class in float64; _finalize removes the part due to the offset e_k of fl(μ_k) from μ_k
        within_ss.index_add_(0, yc, torch.linalg.vector_norm(delta, dim=1).double().square())
        proj64 = proj.double()
        P = proj64[:, :K] - shift[yc, :K]
        gram += P.T @ P
        nearest = (geom.sq_dist[yc] - 2 * P).argmin(1)
        ncc_correct += (nearest == yc).sum()
        if logits is not None:
            predicted = logits[start:start + chunk].argmax(1)
            mismatches += (predicted != nearest).sum()
            correct += (predicted == yc).sum()
        elif mean_logits is not None:
            predicted = (proj64[:, K:] + mean_logits[yc]).argmax(1)
            mismatches += (predicted != nearest).sum()
            correct += (predicted == yc).sum()
    return DeviationStats(gram, within_ss, mismatches, correct, ncc_correct)


def gram_distance(G: Any, reference: Any) -> float:
    """‖G/‖G‖_F − R/‖R‖_F‖_F: the distance between two K×K Grams up to scale (NaN if G is 0).
    >>> import numpy as np
    >>> gram_distance(2 * np.eye(3), np.eye(3))
    0.0
    """
    G = as_tensor(G).double()
    R = as_tensor(reference, device=G.device).double()
    norm = torch.linalg.matrix_norm(G)
    if norm == 0:
        return math.nan
    return float(torch.linalg.matrix_norm(G / norm - R / torch.linalg.matrix_norm(R)))


def etf_distance(G: Any) -> float:
    """‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F for a K×K matrix G (0 for any scaled simplex-ETF Gram)."""
    K = len(G)
    return gram_distance(G, torch.eye(K, dtype=torch.float64) - 1.0 / K)


def _row_stats(X: torch.Tensor, suffix: str) -> dict[str, float]:
    """Of the K×d rows x_k, with x̂_k = x_k/‖x_k‖ and pairs i < j: equinorm (std/mean of ‖x_k‖),
    equiangular (std of cos_ij), maxangle (mean |cos_ij + 1/(K−1)|), distance_var (variance of
    ‖x̂_i − x̂_j‖ = √(2 − 2cos_ij)) and log_distance_var (variance of its log). Keys end in `_{suffix}`."""
    K = X.shape[0]
    norms = torch.linalg.vector_norm(X, dim=1)
    out = dict.fromkeys((f"{name}_{suffix}" for name in ("equinorm", "equiangular", "maxangle", "distance_var",
                                                         "log_distance_var")), math.nan)
    if norms.mean() > 0:
        out[f"equinorm_{suffix}"] = float(norms.std(correction=0) / norms.mean())
    if torch.any(norms == 0):
        return out  # a zero row has no direction
    cos = (X @ X.T) / (norms[:, None] * norms[None, :])
    iu = torch.triu_indices(K, K, offset=1, device=X.device)
    pairs = cos[iu[0], iu[1]]
    out[f"equiangular_{suffix}"] = float(pairs.std(correction=0))
    out[f"maxangle_{suffix}"] = float((pairs + 1.0 / (K - 1)).abs().mean())
    dist = (2 - 2 * pairs).clamp_min(0).sqrt()
    out[f"distance_var_{suffix}"] = float(dist.var(correction=0))
    # two coincident directions: log 0 = −inf, and the variance is undefined (NaN), not a number
    out[f"log_distance_var_{suffix}"] = float(dist.log().var(correction=0)) if bool((dist > 0).all()) else math.nan
    return out


def _cdnv(within_ss: torch.Tensor, counts: torch.Tensor, sq_dist: torch.Tensor) -> tuple[float, float]:
    """(mean, max) over pairs i < j of (Var_i + Var_j)/(2‖μ_i − μ_j‖²), Var_k = within_ss_k/n_k (Galanti et al.
    2022). Coincident means give inf (NaN when both classes have no spread either)."""
    K = len(counts)
    var = (within_ss / counts).clamp_min(0)  # rounding can leave a one-sample class slightly negative
    iu = torch.triu_indices(K, K, offset=1, device=var.device)
    V = (var[iu[0]] + var[iu[1]]) / (2 * sq_dist[iu[0], iu[1]])
    return float(V.mean()), float(V.max())


def _finalize(sums: ClassSums, geom: _Geometry, dev: DeviationStats, rtol: float) -> dict[str, float]:
    N = float(sums.counts.sum())
    K = geom.centered.shape[0]
    A, M = geom.gram, geom.centered
    out = dict.fromkeys(METRIC_KEYS, math.nan)
    if not (torch.isfinite(A).all() and torch.isfinite(dev.proj_gram).all()):
        return out  # non-finite features (a diverged run): every metric is NaN
    # the class means μ_k are float64 sums: the deviations δ'_i = h_i − fl(μ_k) of class k sum to n_k e_k,
    # e_k = μ_k − fl(μ_k), so Σ_{i in k} ‖h_i − μ_k‖² = Σ‖δ'_i‖² − n_k‖e_k‖²; the projections P_i are
    # already those of h_i − μ_k (deviation_stats subtracts e_k Vᵀ)
    counts = sums.counts.double()
    offset = geom.means - geom.means_work.double()  # e_k
    within_ss = dev.within_ss - counts * offset.square().sum(1)  # Σ_{i in k} ‖h_i − μ_k‖², (K,)
    G = dev.proj_gram / N  # M Σ_W Mᵀ
    # NC1 = tr(G (A^†)²) on the eigenbasis of A = U Λ Uᵀ: Σ_{λ_j > cut} (Uᵀ G U)_jj / λ_j²
    evals, U = torch.linalg.eigh(A)
    lam_max = float(evals.max())
    keep = evals > rtol * lam_max if lam_max > 0 else torch.zeros_like(evals, dtype=torch.bool)
    Uk = U[:, keep]
    nc1 = float((torch.diagonal(Uk.T @ G @ Uk) / evals[keep].square()).sum()) if keep.any() else math.nan
    out["nc1"] = nc1
    out["nc2"] = etf_distance(A)
    out["ncc_accuracy"] = float(dev.ncc_correct) / N
    out["tr_sigma_W"] = float(within_ss.sum()) / N
    out["tr_sigma_B"] = float(M.square().sum()) / K
    out["rank_means"] = float(keep.sum())
    out["cdnv"], out["cdnv_max"] = _cdnv(within_ss, counts, geom.sq_dist)
    out.update(_row_stats(M, "means"))
    if geom.W is not None:
        W = geom.W
        out["nc3"] = etf_distance(W @ M.T)
        out["nc4"] = float(dev.mismatches) / N
        out["accuracy"] = float(dev.correct) / N
        out["nc2_W"] = etf_distance(W @ W.T)
        w_norm, m_norm = torch.linalg.matrix_norm(W), torch.linalg.matrix_norm(M)
        if w_norm > 0 and m_norm > 0:
            sd = float(torch.linalg.matrix_norm(W / w_norm - M / m_norm))
            out["self_duality"], out["self_duality_sq"] = sd, sd * sd
        out.update(_row_stats(W, "W"))
        # Zhu et al.'s bias relation: v = Wμ_G + b is the mean logit vector (over the samples, for the
        # default μ_G); their optimum has b = b·1 and μ_G = 0, so v is constant across classes
        v = W @ geom.mu_G + (geom.b if geom.b is not None else 0.0)
        out["bias_relation"] = float(torch.linalg.vector_norm(v))
        logit_scale = float(torch.linalg.matrix_norm(W @ M.T)) / math.sqrt(K)
        spread = float(torch.linalg.vector_norm(v - v.mean()))
        out["bias_relation_centered"] = spread / logit_scale if logit_scale > 0 else math.nan
    return out


def nc_metrics(
    H: Any,
    y: Any,
    W: Any = None,
    b: Any = None,
    *,
    K: int | None = None,
    global_mean: str = "samples",
    rtol: float = DEFAULT_RTOL,
    logits: Any = None,
) -> dict[str, float]:
    """NC1–NC4 and companions of features H (N, d) with labels y (N,), classifier W (K, d), bias b (K,).

    Keys: see METRIC_KEYS; those that need W (nc3, nc4, accuracy, nc2_W, self-duality, *_W, bias_relation*)
    are NaN without it; without b the bias relation takes b = 0. K defaults to max(y) + 1. See the module
    docstring for the formulas. `logits`: HWᵀ + b (N, K) where the caller has them already: the decisions are
    their argmax, and the second pass projects on the centered means alone (half its product).
    """
    H = as_features(H)
    y = as_labels(y, device=H.device)
    if K is None:
        K = int(y.max()) + 1 if y.numel() else 0
        if W is not None:
            K = max(K, int(as_tensor(W).shape[0]))
    if logits is not None:
        if W is None:
            raise ValueError("logits need the classifier W they came from")
        logits = as_features(logits, device=H.device)
        if logits.shape != (H.shape[0], K):
            raise ValueError(f"logits must have shape (N, K) = {(H.shape[0], K)}, got {tuple(logits.shape)}")
        sums = class_sums(H, y, K)
        geom = _geometry(sums, W, b, global_mean, H.dtype, project_W=False)
        return _finalize(sums, geom, deviation_stats(H, y, geom, logits), rtol)
    return nc_metrics_streaming([(H, y)], K, W, b, global_mean=global_mean, rtol=rtol)


def nc_metrics_streaming(
    batches: Iterable[tuple[Any, Any]] | Callable[[], Iterable[tuple[Any, Any]]],
    K: int,
    W: Any = None,
    b: Any = None,
    *,
    global_mean: str = "samples",
    rtol: float = DEFAULT_RTOL,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """`nc_metrics` for features that arrive in batches (H_batch, y_batch), e.g. from a DataLoader.

    Two passes: class sums, then deviations from the means. `batches` must be iterable twice (a
    list, a DataLoader without shuffling-dependent content) or be a function returning a fresh
    iterable. Memory: O(K·d + K²) besides one batch.

    `reduce` sums a statistic over the shards of a data-parallel run (e.g. an all-reduce): every
    statistic of both passes is additive, so each process passes its own shard and all of them get
    the metrics of the union, exactly.
    """
    if K < 2:
        raise ValueError(f"K must be at least 2, got {K}")
    if not callable(batches) and iter(batches) is batches:
        raise ValueError("batches is a one-shot iterator; pass a list, a DataLoader, or a function "
                         "returning a fresh iterable (two passes are needed)")
    fresh = batches if callable(batches) else (lambda: batches)
    sums: ClassSums | None = None
    dtype = torch.float64
    for Hb, yb in fresh():
        Hb = as_features(Hb)
        dtype = Hb.dtype
        s = class_sums(Hb, yb, K)
        sums = s if sums is None else sums + s
    if sums is None:
        raise ValueError("no batches")
    if reduce is not None:
        sums = map_fields(reduce, sums)
    geom = _geometry(sums, W, b, global_mean, dtype)
    dev: DeviationStats | None = None
    for Hb, yb in fresh():
        Hb = as_features(Hb, device=geom.means.device)
        s = deviation_stats(Hb, yb, geom)
        dev = s if dev is None else dev + s
    assert dev is not None
    if reduce is not None:
        dev = map_fields(reduce, dev)
    return _finalize(sums, geom, dev, rtol)


def _check_batch(H: torch.Tensor, y: torch.Tensor, K: int) -> None:
    if H.shape[0] != y.shape[0]:
        raise ValueError(f"H has {H.shape[0]} rows but y has {y.shape[0]} labels")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= K):
        raise ValueError(f"labels must lie in 0..{K - 1}, got range {int(y.min())}..{int(y.max())}")


def _check_nonempty(counts: torch.Tensor) -> None:
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"classes without samples: {empty}; class means are undefined")


def gnc_metrics(H: Any, y: Any, W: Any = None, K: int | None = None, s: float = 1.0) -> dict[str, float]:
    """Generalized neural collapse (Liu et al. 2023), on the sphere, for any K and d:

    - `energy_means`, `min_angle_means`: Riesz s-energy Σ_{i<j} ‖μ̂_i − μ̂_j‖^{−s} (s = 0: log energy)
      and minimum pairwise angle (degrees) of the class-mean directions μ̂_k = μ_k/‖μ_k‖ (not centered:
      HUG's features and proxies live on the sphere, and a spherical code need not have mean 0);
    - `energy_W`, `min_angle_W`: the same for the classifier rows (proxies);
    - `spherical_spread`: mean_i (1 − cos∠(h_i, μ_{y_i})), the intra-class spread on the sphere (0 once
      every feature points along its class mean);
    - `distance_var_means_sphere`, `log_distance_var_means_sphere`: Var_{i<j} ‖μ̂_i − μ̂_j‖ and
      Var_{i<j} log ‖μ̂_i − μ̂_j‖ of the same (uncentered) directions: 0 for any equidistant configuration
      (rhubarbwu/neural-collapse's `nc2g_dist` / `nc2g_log`, which `nc_metrics` reports for the *centered*
      means as `distance_var_means` / `log_distance_var_means`);
    - `distance_var_W`, `log_distance_var_W`: the same for the classifier rows (identical to `nc_metrics`'
      keys of that name).
    Variances are over the K(K−1)/2 pairs (ddof = 0). Unlike NC2, these are meaningful for K > d + 1,
    where no simplex ETF exists (there the distance variances of a spherical code are not 0).
    """
    from analysis.uniformity import min_angle, normalize_rows, riesz_energy

    H = as_features(H).double()
    y = as_labels(y, device=H.device)
    K = int(y.max()) + 1 if K is None else K
    means = class_means(H, y, K)
    if bool((means.norm(dim=1) == 0).any()):
        # a class mean at 0 has no direction: the measures are undefined, not 90° or 0.5
        out = {"energy_means": math.nan, "min_angle_means": math.nan, "spherical_spread": math.nan,
               "distance_var_means_sphere": math.nan, "log_distance_var_means_sphere": math.nan}
    else:
        out = {"energy_means": float(riesz_energy(means, s)),
               "min_angle_means": math.degrees(float(min_angle(means)))}
        # mean_i ⟨ĥ_i, μ̂_{y_i}⟩ = (1/N) Σ_k ⟨Σ_{i in k} ĥ_i, μ̂_k⟩: class sums of the unit rows, no N × d gather
        unit_sums = class_sums(normalize_rows(H), y, K).sums
        out["spherical_spread"] = 1 - float((unit_sums * normalize_rows(means)).sum()) / len(y)
        rows = _row_stats(means, "means_sphere")
        for key in ("distance_var_means_sphere", "log_distance_var_means_sphere"):
            out[key] = rows[key]
    if W is not None:
        Wt = as_features(W, device=H.device).double()
        out["energy_W"] = float(riesz_energy(Wt, s))
        out["min_angle_W"] = math.degrees(float(min_angle(Wt)))
        rows = _row_stats(Wt, "W")
        out["distance_var_W"], out["log_distance_var_W"] = rows["distance_var_W"], rows["log_distance_var_W"]
    return out
