"""Neural-collapse metrics NC1–NC4 and their companions (Papyan, Han & Donoho 2020; DESIGN §5.1).

With class means μ_k, global mean μ_G, centered means M (K×d, rows μ_k − μ_G), classifier W (K×d):

    Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ,   Σ_B = (1/K) Mᵀ M
    NC1 = tr(Σ_W Σ_B^†) / K
    NC2 = ‖ MMᵀ/‖MMᵀ‖_F − E ‖_F,   E = (I_K − 11ᵀ/K)/√(K−1)  (unit-norm simplex-ETF Gram)
    NC3 = ‖ WMᵀ/‖WMᵀ‖_F − E ‖_F
    NC4 = fraction of samples whose argmax_k (Wh + b)_k differs from argmin_k ‖h − μ_k‖

**Two sides** (`side`): the geometry is computed on the smaller of K×K and d×d (DESIGN §8).

*Classes* (K ≤ d + 1, the default there): no d×d matrix. NC1 is computed on the K×K side: with A = MMᵀ and the K×K
matrix G = M Σ_W Mᵀ = (1/N) Σ_i P_iᵀ P_i, where P_i = (h_i − μ_{y_i}) Mᵀ are the projections of the
within-class deviations on the centered means,

    tr(Σ_W Σ_B^†)/K = tr(Σ_W (MᵀM)^†) = tr(Σ_W Mᵀ (A^†)² M) = tr(G (A^†)²),

because (MᵀM)^† = Mᵀ (A^†)² M (write M = U S Vᵀ: both sides equal V S⁻² Vᵀ). The pseudo-inverse is
taken on the K×K side: eigenvalues of A below `rtol`·λ_max count as zero, exactly as a pseudo-inverse
of the d×d matrix Σ_B with the same relative cut-off would do (the nonzero spectra agree).
NC4 needs no second product either: with δ_i = h_i − μ_{y_i},
‖h_i − μ_k‖² = ‖δ_i‖² − 2(P_ik − P_{i,y_i}) + ‖μ_k − μ_{y_i}‖², so the nearest mean is
argmin_k (D_{y_i,k} − 2 P_ik) with D the K×K squared distances between means; and the logits are
δ_i Wᵀ + (μ_{y_i} Wᵀ) + b. One product of the deviations with [M; W]ᵀ gives everything.

*Features* (K > d + 1, the default there; K = 10⁴–10⁵ classes): no K×K matrix. NC1 = tr(Σ_W (MᵀM)^†) from the d×d
Σ_W (summed from the deviations of the second pass) and the eigenvalues of MᵀM (the same nonzero spectrum as A,
the same cut-off); NC2, NC3 and the ETF distance of WWᵀ from MᵀM-type identities: for the K×K matrix XYᵀ,
‖XYᵀ‖_F² = tr(XᵀX·YᵀY) and ⟨XYᵀ, I − 11ᵀ/K⟩ = Σ_k⟨x_k, y_k⟩ − ⟨Xᵀ1, Yᵀ1⟩/K, so
‖XYᵀ/‖XYᵀ‖_F − E‖_F² = 2 − 2⟨XYᵀ, E⟩/‖XYᵀ‖_F (NC3); for a Gram XXᵀ (NC2, nc2_W) the same distance from the
eigenvalues of the d×d (PX)ᵀ(PX), P = I − 11ᵀ/K, which keeps full precision near an ETF (`etf_distance_gram`). The
decisions (NC4, the accuracies) come from the centered features' products with [M; W]ᵀ, one block of rows at a
time within the memory budget (`analysis.blocked`): nearest mean = argmin_k ‖m_k‖² − 2⟨h − μ_G, m_k⟩, logits = (h
− μ_G)Wᵀ + μ_G Wᵀ + b. Pairwise quantities
(cosines, CDNV) are summed over K×K tiles (`analysis.pairwise`) on either side.

Classes without samples (`missing`): "error" (the default, as for a UFM, whose classes all have samples) raises;
"exclude" measures the classes present (the means, NC1–NC3, the rows of W they pair with) and reports how many
were left out as `excluded_classes`; the classifier still decides among all K classes.

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
deviations (K numbers of the second pass) and the pairwise distances of the means: it is exact under
streaming and `reduce` like everything else.

Two more of rhubarbwu's measures, from the same statistics:

- `nc1_trace` = tr Σ_W / tr Σ_B = tr_sigma_W / tr_sigma_B, NC1 as a ratio of traces (no pseudo-inverse; Tirer,
  Huang & Niles-Weed 2023; rhubarbwu's `covariance_ratio(..., "quotient")`, "nc1_quot"); inf if the means coincide
  while the classes have spread.
- `nc3_uniform` = Var_k ⟨w_k, μ_k − μ_G⟩ over the classes, with Bessel's correction (ddof = 1, unlike every other
  variance here: the number of rhubarbwu's `similarities(W, M, m_G).var()`, their "nc3u_uni_dual", the uniform
  duality of Wu & Papyan 2024, "Linguistic collapse: neural collapse in (large) language models"); 0 when every
  classifier row has the same inner product with its centered mean. `nc3_uniform_cos` = std_k/mean_k of the cosines
  cos∠(w_k, μ_k − μ_G) (ddof = 0): the scale-free form (the cosines whose mean and std Wu & Papyan's analysis code
  records); 0 when the classifier is aligned alike with every class, NaN where a row or a mean is 0.

Precision: class sums, the K×K, d×d and K×d quantities are computed in float64 (the first pass sums
in float64 whatever the features' dtype, so the means are those of float64 features); the products of
the N-sized second pass run in float32 (float64 for float64 features; half precision is upcast) on the
features' device, and the rounding of the means to that dtype is corrected exactly (it is a
per-class constant shift of the deviations).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from analysis._arrays import as_features, as_labels, as_tensor
from analysis.blocked import block_rows
from analysis.pairwise import CosinePairStats, cosine_pair_stats

GLOBAL_MEANS = ("samples", "classes")
SIDES = ("auto", "classes", "features")
MISSING = ("error", "exclude")
DEFAULT_RTOL = 1e-10
# rows per chunk of the second pass: keeps the chunk of deviations (chunk × d) near cache size
_CHUNK_ELEMENTS = 1 << 20
# chunk × (K or 2K)-shaped temporaries of the second pass alive at once (projections, their float64 copy, scores)
_DECISION_COPIES = 4

METRIC_KEYS = (
    "nc1", "nc2", "nc3", "nc4", "accuracy", "ncc_accuracy", "nc2_W", "self_duality",
    "self_duality_sq", "equinorm_means", "equinorm_W", "equiangular_means", "equiangular_W",
    "maxangle_means", "maxangle_W", "tr_sigma_W", "tr_sigma_B", "rank_means",
    "cdnv", "cdnv_max", "bias_relation", "bias_relation_centered", "distance_var_means",
    "log_distance_var_means", "distance_var_W", "log_distance_var_W", "nc1_trace", "nc3_uniform", "nc3_uniform_cos",
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

    # Σ_i of the within-class second moment on the geometry's side: (K', K') Σ_i P_iᵀ P_i (classes) or (d, d)
    # Σ_i δ'_i δ'_iᵀ (features), K' the classes measured
    second: torch.Tensor
    within_ss: torch.Tensor  # (K',) float64: Σ_{i in class k} ‖δ'_i‖², δ'_i = h_i − fl(μ_k)
    mismatches: torch.Tensor  # () int64: samples with classifier decision ≠ nearest class mean
    correct: torch.Tensor  # () int64: samples with classifier decision = label
    ncc_correct: torch.Tensor  # () int64: samples whose nearest class mean is their own

    __add__ = add_fields


def _chunk_rows(d: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(d, 1))


# features larger than this are measured in float64 even when stored in float32: their squares (1e24), summed over
# up to 1e14 terms, stay inside float32's range (3.4e38) below it and leave it above
FLOAT32_SAFE = 1e12


def check_options(K: Any, *, global_mean: Any = "samples", rtol: Any = DEFAULT_RTOL, side: Any = "auto",
                  missing: Any = "error") -> None:
    """The metrics' options as an accumulator or adapter receives them: K an int >= 2, global_mean in GLOBAL_MEANS,
    rtol a number >= 0, side in SIDES, missing in MISSING — TypeError or ValueError naming the argument.
    >>> check_options(3, side="features")
    >>> check_options(2.0)
    Traceback (most recent call last):
    ...
    TypeError: K must be an int, got 2.0 (float)
    """
    if isinstance(K, bool) or not isinstance(K, numbers.Integral):
        raise TypeError(f"K must be an int, got {K!r} ({type(K).__name__})")
    if K < 2:
        raise ValueError(f"K must be at least 2, got {K!r}")
    if global_mean not in GLOBAL_MEANS:
        raise ValueError(f"global_mean must be one of {GLOBAL_MEANS}, got {global_mean!r}")
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real):
        raise TypeError(f"rtol must be a number, got {rtol!r} ({type(rtol).__name__})")
    if not rtol >= 0:
        raise ValueError(f"rtol must be non-negative, got {rtol!r}")
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if missing not in MISSING:
        raise ValueError(f"missing must be one of {MISSING}, got {missing!r}")


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Products run in float64 for float64 features and in float32 otherwise (half precision is upcast)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def class_sums(H: Any, y: Any, K: int) -> ClassSums:
    """Per-class counts and feature sums of one batch (scatter-add, one pass over H).

    Summed in float64 whatever the features' dtype (chunks of rows are converted one at a time), so
    the sums of float32 or half-precision features are those of the same features in float64. Summing
    in float32 instead errs by ~1e-7 of the features' magnitude, not of their spread: with an offset of
    1e4 the means moved by ~1e-3 and NC1 by 1e-3 relative (an error the second pass cannot see).
    >>> s = class_sums([[1.0], [3.0], [5.0]], [0, 0, 1], 2)
    >>> s.counts.tolist(), s.sums.flatten().tolist()
    ([2, 1], [4.0, 5.0])
    """
    H = as_features(H)
    y = as_labels(y, device=H.device)
    _check_batch(H, y, K)
    d = H.shape[1]
    sums = torch.zeros(K, d, dtype=torch.float64, device=H.device)
    chunk = _chunk_rows(d)
    buf = None if H.dtype == torch.float64 else torch.empty(min(chunk, H.shape[0]), d, dtype=torch.float64,
                                                            device=H.device)
    for start in range(0, H.shape[0], chunk):
        rows = H[start:start + chunk]
        if buf is not None:
            rows = buf[:rows.shape[0]].copy_(rows)
        sums.index_add_(0, y[start:start + chunk], rows)
    return ClassSums(torch.bincount(y, minlength=K), sums)


def class_means(H: Any, y: Any, K: int) -> torch.Tensor:
    """μ_k = mean of the features of class k, a (K, d) tensor in the features' dtype (summed in float64).
    >>> class_means([[1.0], [3.0], [5.0]], [0, 0, 1], 2).flatten().tolist()
    [2.0, 5.0]
    """
    s = class_sums(H, y, K)
    _check_nonempty(s.counts)
    return (s.sums / s.counts.unsqueeze(1)).to(as_features(H).dtype)


def choose_side(K: int, d: int, side: str = "auto") -> str:
    """The side the geometry is computed on: "classes" (K×K) or "features" (d×d); "auto" takes the classes where a
    simplex ETF fits (K <= d + 1: the K×K side is at most the size of the d×d one, and the distances to an ETF,
    which can be 0 there, keep full precision), the features beyond.
    >>> choose_side(10, 512), choose_side(32768, 256), choose_side(5, 3, "classes"), choose_side(4, 3)
    ('classes', 'features', 'classes', 'classes')
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return side if side != "auto" else ("classes" if K <= d + 1 else "features")


@dataclass
class _Geometry:
    """What the second pass needs from the first: means, centered means and, on the classes side, their K×K Grams.
    Per-class tensors cover the classes measured (all K, or those present with missing="exclude"); `present` maps
    their positions to class ids and `position` class ids to positions (−1: not measured)."""

    side: str
    means: torch.Tensor  # (K', d) float64
    counts: torch.Tensor  # (K',) float64
    mu_G: torch.Tensor  # (d,) float64, the global mean (of the samples or of the class means)
    centered: torch.Tensor  # (K', d) float64, M
    W: torch.Tensor | None  # (K, d) float64, every class's row
    b: torch.Tensor | None  # (K,) float64
    present: torch.Tensor  # (K',) int64 class ids
    position: torch.Tensor  # (K,) int64
    # the second pass runs in a working dtype (see _work_dtype): the means and the directions [M; W] rounded to
    # it; on the classes side e_k Vᵀ with e_k = μ_k − fl(μ_k), the per-class shift that rounding causes
    means_work: torch.Tensor  # (K', d)
    V_work: torch.Tensor  # (K' or K' + K, d)
    gram: torch.Tensor | None = None  # (K', K') float64, A = MMᵀ (classes side)
    sq_dist: torch.Tensor | None = None  # (K', K') float64, ‖μ_j − μ_k‖² (classes side)
    shift: torch.Tensor | None = None  # (K', K' or K' + K) float64 (classes side)
    offset_logits: torch.Tensor | None = None  # (K,) float64: μ_G Wᵀ + b (features side)

    @property
    def excluded(self) -> int:
        return int(self.position.numel() - self.present.numel())


def _geometry(sums: ClassSums, W: Any, b: Any, global_mean: str, dtype: torch.dtype, project_W: bool = True,
              side: str = "auto", missing: str = "error") -> _Geometry:
    if global_mean not in GLOBAL_MEANS:
        raise ValueError(f"global_mean must be one of {GLOBAL_MEANS}, got {global_mean!r}")
    if missing not in MISSING:
        raise ValueError(f"missing must be one of {MISSING}, got {missing!r}")
    K_all, d = sums.sums.shape
    if missing == "error":
        _check_nonempty(sums.counts)
    present = (sums.counts > 0).nonzero().flatten()
    if len(present) < 2:
        raise ValueError(f"{len(present)} class(es) with samples: the metrics need at least 2")
    position = torch.full((K_all,), -1, dtype=torch.int64, device=present.device)
    position[present] = torch.arange(len(present), device=present.device)
    every = len(present) == K_all
    counts = (sums.counts if every else sums.counts[present]).double()
    total = (sums.sums if every else sums.sums[present]).double()
    means = total / counts.unsqueeze(1)
    # computing μ_G from the same float64 sums keeps Σ_k n_k (μ_k − μ_G) = 0 to float64 precision
    mu_G = total.sum(0) / counts.sum() if global_mean == "samples" else means.mean(0)
    M = means - mu_G
    W64 = b64 = None
    if W is not None:
        W64 = as_tensor(W, device=M.device, name="W").double()
        if W64.shape != (K_all, d):
            raise ValueError(f"W must have shape (K, d) = {(K_all, d)}, got {tuple(W64.shape)}")
        if b is not None:
            b64 = as_tensor(b, device=M.device, name="b").double().reshape(-1)
            if b64.shape != (K_all,):
                raise ValueError(f"b must have shape (K,) = {(K_all,)}, got {tuple(b64.shape)}")
    work = _work_dtype(dtype)
    side = choose_side(len(present), d, side)
    means_work = means.to(work)
    V_work = (M if W64 is None or not project_W else torch.cat([M, W64])).to(work)
    geom = _Geometry(side, means, counts, mu_G, M, W64, b64, present, position, means_work, V_work)
    if side == "classes":
        A = M @ M.T
        diag = torch.diagonal(A)
        geom.gram = A
        geom.sq_dist = (diag[:, None] + diag[None, :] - 2 * A).clamp_min(0)
        geom.shift = (means - means_work.double()) @ V_work.double().T
    elif W64 is not None:
        geom.offset_logits = W64 @ mu_G + (b64 if b64 is not None else 0.0)
    return geom


def deviation_stats(H: Any, y: Any, geom: _Geometry, logits: Any = None, predictions: Any = None) -> DeviationStats:
    """Second pass over one batch, chunk by chunk: the within-class second moment on the geometry's side, the
    per-class sums of squares, and the decisions (nearest class mean; the classifier's argmax of HWᵀ + b, or of the
    given `logits` (N, K), or the given `predictions` (N,) class ids)."""
    H = as_features(H)
    y = as_labels(y, device=H.device)
    K_all = geom.position.numel()
    _check_batch(H, y, K_all)
    dev = H.device
    Kp, d = geom.centered.shape
    V, means, work = geom.V_work, geom.means_work, geom.V_work.dtype
    p = geom.position.to(dev)[y]
    if bool((p < 0).any()):
        raise ValueError("a batch holds a class that had no samples in the first pass")
    present = geom.present.to(dev)
    decide = geom.W is not None or logits is not None or predictions is not None
    classes = geom.side == "classes"
    second = torch.zeros((Kp, Kp) if classes else (d, d), dtype=torch.float64, device=dev)
    within_ss = torch.zeros(Kp, dtype=torch.float64, device=dev)
    zero = torch.zeros((), dtype=torch.int64, device=dev)
    mismatches, correct, ncc_correct = zero.clone(), zero.clone(), zero.clone()
    mean_logits = None
    if classes and geom.W is not None and logits is None and predictions is None:
        mean_logits = means.double() @ geom.W.T  # fl(μ_j) · w_k: logits = δ' Wᵀ + fl(μ_y) Wᵀ + b
        if geom.b is not None:
            mean_logits = mean_logits + geom.b
    if not classes:
        to_centered = (means.double() - geom.mu_G).to(dev)  # fl(μ_k) − μ_G: h − μ_G = δ' + this, in float64
        sq_norms = geom.centered.square().sum(1).to(device=dev, dtype=work)
        offset_logits = None if geom.offset_logits is None else geom.offset_logits.to(device=dev, dtype=work)
    chunk = min(_chunk_rows(d), block_rows(V.shape[0], itemsize=8, copies=_DECISION_COPIES, device=dev))
    # preallocated buffers: the gathered means are overwritten by the deviations in place, so the
    # deviations stay in cache for the product that follows (measured 2.7x faster than H[c] - means[y[c]])
    delta_buf = torch.empty(min(chunk, H.shape[0]), d, dtype=work, device=dev)
    proj_buf = torch.empty(min(chunk, H.shape[0]), V.shape[0], dtype=work, device=dev)
    for start in range(0, H.shape[0], chunk):
        yc, pc = y[start:start + chunk], p[start:start + chunk]
        rows = yc.shape[0]
        delta, proj = delta_buf[:rows], proj_buf[:rows]
        torch.index_select(means, 0, pc, out=delta)
        torch.sub(H[start:start + chunk], delta, out=delta)
        # ‖δ'‖² per row in the working dtype (a float64 copy of the chunk would cost a pass), summed
        # per class in float64; _finalize removes the part due to the offset e_k of fl(μ_k) from μ_k
        within_ss.index_add_(0, pc, torch.linalg.vector_norm(delta, dim=1).double().square())
        if classes:
            # δ'_i = h_i − fl(μ_k) uses the means rounded to the working dtype; the projection is
            # P_i = δ'_i Vᵀ − e_k Vᵀ: subtract that per-class constant (geom.shift) in float64. The means μ_k
            # themselves are float64 sums (class_sums), so Σ_{i in k} δ'_i = n_k e_k, which _finalize uses.
            torch.mm(delta, V.T, out=proj)
            proj64 = proj.double()
            P = proj64[:, :Kp] - geom.shift[pc, :Kp]
            second += P.T @ P
            scores = geom.sq_dist[pc] - 2 * P
        else:
            second += (delta.T @ delta).double()
            if not decide:
                continue
            # h − μ_G formed in float64 (an offset of the features cancels there, not in the working dtype); the
            # nearest-mean scores ‖m_k‖² − 2⟨h − μ_G, m_k⟩ and the logits (h − μ_G)Wᵀ + μ_G Wᵀ + b, one addmm each
            centered = (delta.double() + to_centered[pc]).to(work)
            scores = torch.addmm(sq_norms, centered, V[:Kp].T, alpha=-2, out=proj[:, :Kp])
            if V.shape[0] > Kp:
                proj64 = torch.addmm(offset_logits, centered, V[Kp:].T, out=proj[:, Kp:])
        nearest = present[scores.argmin(1)]
        ncc_correct += (nearest == yc).sum()
        predicted = None
        if logits is not None:
            predicted = logits[start:start + chunk].argmax(1)
        elif predictions is not None:
            predicted = predictions[start:start + chunk]
        elif mean_logits is not None:
            predicted = (proj64[:, Kp:] + mean_logits[pc]).argmax(1)
        elif geom.W is not None:
            predicted = proj64.argmax(1)  # the logits themselves (features side)
        if predicted is not None:
            mismatches += (predicted != nearest).sum()
            correct += (predicted == yc).sum()
    return DeviationStats(second, within_ss, mismatches, correct, ncc_correct)


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
    """‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F for a K×K matrix G (0 for any scaled simplex-ETF Gram).
    >>> round(etf_distance([[1.0, -1.0], [-1.0, 1.0]]), 12)
    0.0
    """
    K = len(G)
    return gram_distance(G, torch.eye(K, dtype=torch.float64) - 1.0 / K)


def etf_distance_factored(X: Any, Y: Any) -> float:
    """`etf_distance(X Yᵀ)` for K×d factors without the K×K matrix (module docstring): with ‖XYᵀ‖_F² = tr(XᵀX YᵀY)
    and ⟨XYᵀ, I − 11ᵀ/K⟩ = Σ_k ⟨x_k, y_k⟩ − ⟨Xᵀ1, Yᵀ1⟩/K, the distance is √(2 − 2⟨XYᵀ, E⟩/‖XYᵀ‖_F).
    >>> import torch
    >>> X = torch.randn(7, 3, dtype=torch.float64)
    >>> abs(etf_distance_factored(X, X) - etf_distance(X @ X.T)) < 1e-12
    True
    """
    X = as_tensor(X).double()
    Y = as_tensor(Y, device=X.device).double()
    K = X.shape[0]
    norm_sq = float(((X.T @ X) * (Y.T @ Y)).sum())
    if not norm_sq > 0:
        return math.nan
    inner = (float((X * Y).sum()) - float(X.sum(0) @ Y.sum(0)) / K) / math.sqrt(K - 1)
    return math.sqrt(max(0.0, 2 - 2 * inner / math.sqrt(norm_sq)))


def etf_distance_gram(X: Any) -> float:
    """`etf_distance(X Xᵀ)` for K×d rows X without the K×K Gram, to full precision near an ETF. With a = ‖XXᵀ‖_F
    (= ‖XᵀX‖_F), c = a/√(K−1) and P = I − 11ᵀ/K: ‖XXᵀ − cP‖² splits into the P-block, Σ_j (λ_j − c)² over the K − 1
    eigenvalues of PXXᵀP on the range of P (those of (PX)ᵀ(PX), padded with zeros), and the rest,
    2‖P X s‖²/K + ‖s‖⁴/K² with s = Xᵀ1; the distance is ‖XXᵀ − cP‖/a. Unlike the expanded 2 − 2⟨A, E⟩/‖A‖ nothing
    cancels where the distance is small (a simplex ETF gives 0 to rounding, not 1e-8).
    >>> import torch
    >>> X = torch.randn(9, 4, dtype=torch.float64)
    >>> abs(etf_distance_gram(X) - etf_distance(X @ X.T)) < 1e-12
    True
    """
    X = as_tensor(X).double()
    K = X.shape[0]
    a = float(torch.linalg.matrix_norm(X.T @ X))
    if not a > 0:
        return math.nan
    c = a / math.sqrt(K - 1)
    Y = X - X.mean(0)  # PX
    lam = torch.linalg.eigvalsh(Y.T @ Y).clamp_min(0).flip(0)[:K]
    lam = torch.cat([lam, lam.new_zeros(K - len(lam))])
    within = float((lam - c).square().sum()) - c * c  # one of the K is PXXᵀP's zero along 1, outside the range of P
    s = X.sum(0)
    v = X @ s
    rest = 2 * float((v - v.mean()).square().sum()) / K + float(s @ s) ** 2 / K**2
    return math.sqrt(max(0.0, within + rest)) / a


def _row_stats(X: torch.Tensor, suffix: str, variances: torch.Tensor | None = None,
               pairwise: bool = True, pairs: CosinePairStats | None = None) -> dict[str, float]:
    """Of the K×d rows x_k, with x̂_k = x_k/‖x_k‖ and pairs i < j: equinorm (std/mean of ‖x_k‖),
    equiangular (std of cos_ij), maxangle (mean |cos_ij + 1/(K−1)|), distance_var (variance of
    ‖x̂_i − x̂_j‖ = √(2 − 2cos_ij)) and log_distance_var (variance of its log). Keys end in `_{suffix}`; with
    per-row `variances`, also cdnv and cdnv_max of the rows as class means (from the same tiles). The pairs are
    summed over tiles (analysis.pairwise): no K×K matrix, one pass (`pairs`: that pass's result, computed by the
    caller). `pairwise` False: only equinorm (the rest NaN)."""
    norms = torch.linalg.vector_norm(X, dim=1)
    out = dict.fromkeys((f"{name}_{suffix}" for name in ("equinorm", "equiangular", "maxangle", "distance_var",
                                                         "log_distance_var")), math.nan)
    if norms.mean() > 0:
        out[f"equinorm_{suffix}"] = float(norms.std(correction=0) / norms.mean())
    if not pairwise:
        return out
    st = pairs if pairs is not None else cosine_pair_stats(X, variances=variances)
    if variances is not None:
        out["cdnv"], out["cdnv_max"] = st.cdnv_mean, st.cdnv_max
    if torch.any(norms == 0):
        return out  # a zero row has no direction
    out[f"equiangular_{suffix}"] = math.sqrt(st.cos_var)
    out[f"maxangle_{suffix}"] = st.maxangle
    out[f"distance_var_{suffix}"] = st.dist_var
    # two coincident directions: log 0 = −inf, and the variance is undefined (NaN), not a number
    out[f"log_distance_var_{suffix}"] = st.log_dist_var
    return out


def _finalize(sums: ClassSums, geom: _Geometry, dev: DeviationStats, rtol: float,
              decisions: bool = True, pairwise: bool = True, pairs_W: CosinePairStats | None = None
              ) -> dict[str, float]:
    """The metrics from both passes' statistics. `decisions` False: nc4, accuracy and ncc_accuracy were not
    measured (NaN); `pairwise` False: the statistics over the K(K−1)/2 pairs are not computed (NaN: cdnv, cdnv_max,
    equiangular_*, maxangle_*, distance_var_*, log_distance_var_*)."""
    N = float(geom.counts.sum())
    Kp = geom.centered.shape[0]
    M = geom.centered
    out = dict.fromkeys(METRIC_KEYS, math.nan)
    if geom.excluded:
        out["excluded_classes"] = float(geom.excluded)
    if not (torch.isfinite(M).all() and torch.isfinite(dev.second).all()):
        return out  # non-finite features (a diverged run): every metric is NaN
    # the class means μ_k are float64 sums: the deviations δ'_i = h_i − fl(μ_k) of class k sum to n_k e_k,
    # e_k = μ_k − fl(μ_k), so Σ_{i in k} ‖h_i − μ_k‖² = Σ‖δ'_i‖² − n_k‖e_k‖² and, on the features side,
    # Σ_{i in k} (h_i − μ_k)(h_i − μ_k)ᵀ = Σ δ'_i δ'_iᵀ − n_k e_k e_kᵀ; on the classes side the projections P_i are
    # already those of h_i − μ_k (deviation_stats subtracts e_k Vᵀ)
    counts = geom.counts
    # e_k (None where the second pass ran in float64: the means are then exact and e_k = 0; no K×d temporaries)
    offset = None if geom.means_work.dtype == torch.float64 else geom.means - geom.means_work.double()
    within_ss = dev.within_ss if offset is None else dev.within_ss - counts * offset.square().sum(1)  # (K',)
    if geom.side == "classes":
        # NC1 = tr(G (A^†)²) on the eigenbasis of A = U Λ Uᵀ: Σ_{λ_j > cut} (Uᵀ G U)_jj / λ_j²
        G = dev.second / N  # M Σ_W Mᵀ
        evals, U = torch.linalg.eigh(geom.gram)
        power = 2
    else:
        # NC1 = tr(Σ_W (MᵀM)^†) on the eigenbasis of MᵀM = V Λ Vᵀ: Σ_{λ_j > cut} (Vᵀ Σ_W V)_jj / λ_j
        if offset is None:
            G = dev.second / N  # Σ_W
        else:
            scaled = offset * counts.sqrt().unsqueeze(1)
            G = (dev.second - scaled.T @ scaled) / N
        evals, U = torch.linalg.eigh(M.T @ M)
        power = 1
    lam_max = float(evals.max())
    keep = evals > rtol * lam_max if lam_max > 0 else torch.zeros_like(evals, dtype=torch.bool)
    Uk = U[:, keep]
    nc1 = float((torch.diagonal(Uk.T @ G @ Uk) / evals[keep].pow(power)).sum()) if keep.any() else math.nan
    out["nc1"] = nc1
    classes = geom.side == "classes"
    out["nc2"] = etf_distance(geom.gram) if classes else etf_distance_gram(M)
    if decisions:
        out["ncc_accuracy"] = float(dev.ncc_correct) / N
    out["tr_sigma_W"] = float(within_ss.sum()) / N
    out["tr_sigma_B"] = float(M.square().sum()) / Kp
    out["rank_means"] = float(keep.sum())
    tr_w, tr_b = out["tr_sigma_W"], out["tr_sigma_B"]
    out["nc1_trace"] = tr_w / tr_b if tr_b > 0 else (math.inf if tr_w > 0 else math.nan)
    # CDNV from the pairwise distances of the means, which the centered means share (one pass over their pairs)
    out.update(_row_stats(M, "means", variances=(within_ss / counts).clamp_min(0), pairwise=pairwise))
    if geom.W is not None:
        W = geom.W if not geom.excluded else geom.W[geom.present]  # the rows paired with the measured means
        out["nc3"] = etf_distance(W @ M.T) if classes else etf_distance_factored(W, M)
        if decisions:
            out["nc4"] = float(dev.mismatches) / N
            out["accuracy"] = float(dev.correct) / N
        out["nc2_W"] = etf_distance(W @ W.T) if classes else etf_distance_gram(W)
        w_norm, m_norm = torch.linalg.matrix_norm(W), torch.linalg.matrix_norm(M)
        if w_norm > 0 and m_norm > 0:
            sd = float(torch.linalg.matrix_norm(W / w_norm - M / m_norm))
            out["self_duality"], out["self_duality_sq"] = sd, sd * sd
        out.update(_row_stats(W, "W", pairwise=pairwise, pairs=None if geom.excluded else pairs_W))
        # uniform duality: how alike ⟨w_k, μ_k − μ_G⟩ (and the cosines) are across the classes
        dots = (W * M).sum(1)
        out["nc3_uniform"] = float(dots.var(correction=1))
        row_norms = torch.linalg.vector_norm(W, dim=1) * torch.linalg.vector_norm(M, dim=1)
        if bool((row_norms > 0).all()):
            cos = dots / row_norms
            mean_cos = float(cos.mean())
            out["nc3_uniform_cos"] = float(cos.std(correction=0)) / mean_cos if mean_cos != 0 else math.nan
        # Zhu et al.'s bias relation: v = Wμ_G + b is the mean logit vector (over the samples, for the
        # default μ_G); their optimum has b = b·1 and μ_G = 0, so v is constant across classes
        b = geom.b[geom.present] if geom.b is not None else 0.0
        v = W @ geom.mu_G + b
        out["bias_relation"] = float(torch.linalg.vector_norm(v))
        logit_sq = float(((M.T @ M) * (W.T @ W)).sum()) if not classes else float((W @ M.T).square().sum())
        logit_scale = math.sqrt(max(0.0, logit_sq)) / math.sqrt(Kp)
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
    predictions: Any = None,
    side: str = "auto",
    missing: str = "error",
    pairwise: bool = True,
    pairs_W: CosinePairStats | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """NC1–NC4 and companions of features H (N, d) with labels y (N,), classifier W (K, d), bias b (K,).

    Keys: see METRIC_KEYS; those that need W (nc3, nc3_uniform*, nc4, accuracy, nc2_W, self-duality, *_W,
    bias_relation*) are NaN without it; without b the bias relation takes b = 0. K defaults to max(y) + 1. See the
    module docstring for the formulas. `logits`: HWᵀ + b (N, K) where the caller has them already, or `predictions`
    (N,) the classifier's decisions (their argmax, e.g. computed block by block): the second pass then projects on
    the centered means alone (half its product). `side`: "auto", "classes" (K×K) or "features" (d×d); `missing`:
    "error" or "exclude" (module docstring; the key `excluded_classes` then counts the classes left out);
    `pairwise` False skips the statistics over the K(K−1)/2 pairs of means and of rows of W (equiangularity,
    max-angle, distance variances, CDNV: NaN), the O(K²·d) part that dominates at K = 10⁴–10⁵; `pairs_W`:
    `analysis.pairwise.cosine_pair_stats(W)` where the caller has it (it also asks `gnc_metrics` about W).
    `reduce`: H, y (and `predictions`) are one shard of the rows of a data-parallel run and `reduce` sums a
    statistic over the shards (an all-reduce returning the sum; K must be given): the metrics of the union, as in
    `nc_metrics_streaming`.
    >>> import torch
    >>> H = torch.tensor([[0.0, 0.0], [0.2, 0.0], [2.0, 0.0], [2.2, 0.0]], dtype=torch.float64)
    >>> out = nc_metrics(H, [0, 0, 1, 1], W=[[-1.0, 0.0], [1.0, 0.0]], b=[1.1, -1.1])
    >>> round(out["nc1"], 12), out["accuracy"], out["nc4"]   # tr(Σ_W Σ_B^†)/K = (0.01 / 1) / 2
    (0.005, 1.0, 0.0)
    """
    H = as_features(H)
    if H.dtype != torch.float64 and H.numel() and H.device.type != "mps" and float(H.abs().amax()) > FLOAT32_SAFE:
        H = H.double()  # finite float32 features near 1e20 have squares beyond float32's range: the float64 answer
    y = as_labels(y, device=H.device)
    if K is None:
        K = int(y.max()) + 1 if y.numel() else 0
        if W is not None:
            K = max(K, int(as_tensor(W, name="W").shape[0]))
    if logits is not None or predictions is not None:
        if W is None:
            raise ValueError("logits (or predictions) need the classifier W they came from")
        if logits is not None:
            logits = as_features(logits, device=H.device)
            if logits.shape != (H.shape[0], K):
                raise ValueError(f"logits must have shape (N, K) = {(H.shape[0], K)}, got {tuple(logits.shape)}")
        else:
            predictions = as_labels(predictions, device=H.device)
            if predictions.shape != y.shape:
                raise ValueError(f"predictions must have shape (N,) = {tuple(y.shape)}, got "
                                 f"{tuple(predictions.shape)}")
        sums = class_sums(H, y, K)
        if reduce is not None:
            sums = map_fields(reduce, sums)
        geom = _geometry(sums, W, b, global_mean, H.dtype, project_W=False, side=side, missing=missing)
        dev = deviation_stats(H, y, geom, logits, predictions)
        if reduce is not None:
            dev = map_fields(reduce, dev)
        return _finalize(sums, geom, dev, rtol, pairwise=pairwise, pairs_W=pairs_W)
    return nc_metrics_streaming([(H, y)], K, W, b, global_mean=global_mean, rtol=rtol, side=side, missing=missing,
                                pairwise=pairwise, pairs_W=pairs_W, reduce=reduce)


def nc_metrics_streaming(
    batches: Iterable[tuple[Any, Any]] | Callable[[], Iterable[tuple[Any, Any]]],
    K: int,
    W: Any = None,
    b: Any = None,
    *,
    global_mean: str = "samples",
    rtol: float = DEFAULT_RTOL,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    side: str = "auto",
    missing: str = "error",
    pairwise: bool = True,
    pairs_W: CosinePairStats | None = None,
) -> dict[str, float]:
    """`nc_metrics` for features that arrive in batches (H_batch, y_batch), e.g. from a DataLoader.

    Two passes: class sums, then deviations from the means. `batches` must be iterable twice (a
    list, a DataLoader without shuffling-dependent content) or be a function returning a fresh
    iterable. Memory: O(K·d + min(K, d)²) besides one batch and the blocks of the decisions.

    `reduce` sums a statistic over the shards of a data-parallel run (e.g. an all-reduce): every
    statistic of both passes is additive, so each process passes its own shard and all of them get
    the metrics of the union, exactly.
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> y = torch.arange(40) % 4
    >>> H = 3 * torch.eye(4, 5, dtype=torch.float64)[y] + torch.randn(40, 5, generator=g, dtype=torch.float64)
    >>> a = nc_metrics_streaming([(H[:25], y[:25]), (H[25:], y[25:])], 4)
    >>> abs(a["nc1"] / nc_metrics(H, y)["nc1"] - 1) < 1e-12
    True
    """
    if K < 2:
        raise ValueError(f"K must be at least 2, got {K}")
    if not callable(batches) and iter(batches) is batches:
        raise ValueError("batches is a one-shot iterator; pass a list, a DataLoader, or a function "
                         "returning a fresh iterable (two passes are needed)")
    fresh = batches if callable(batches) else (lambda: batches)
    sums: ClassSums | None = None
    dtype = torch.float64
    big = False  # float32 features beyond FLOAT32_SAFE: the second pass runs in float64 (as nc_metrics does)
    for Hb, yb in fresh():
        Hb = as_features(Hb)
        dtype = Hb.dtype
        big = big or (dtype != torch.float64 and Hb.numel() > 0 and Hb.device.type != "mps"
                      and float(Hb.abs().amax()) > FLOAT32_SAFE)
        s = class_sums(Hb, yb, K)
        sums = s if sums is None else sums + s
    if sums is None:
        raise ValueError("no batches")
    if reduce is not None:
        sums = map_fields(reduce, sums)
    if reduce is not None:
        big = bool(reduce(torch.tensor(float(big), dtype=torch.float64)) > 0)  # every shard the same dtype
    dtype = torch.float64 if big else dtype
    geom = _geometry(sums, W, b, global_mean, dtype, side=side, missing=missing)
    dev: DeviationStats | None = None
    for Hb, yb in fresh():
        Hb = as_features(Hb, device=geom.means.device)
        Hb = Hb.double() if big else Hb
        s = deviation_stats(Hb, yb, geom)
        dev = s if dev is None else dev + s
    assert dev is not None
    if reduce is not None:
        dev = map_fields(reduce, dev)
    return _finalize(sums, geom, dev, rtol, pairwise=pairwise, pairs_W=pairs_W)


class SufficientStats:
    """One-pass statistics of a stream of labelled features, in O(K·d + d²) memory whatever the number of samples:
    counts n_k, per class a shift c_k (the first sample of class k seen), the shifted sums Σ_{i in k}(h_i − c_k),
    the shifted sums of squares Σ_{i in k}‖h_i − c_k‖², and the d×d scatter Σ_i (h_i − c_{y_i})(h_i − c_{y_i})ᵀ;
    optionally the count of correct classifier decisions given with the batches.

    They give the exact within-class scatter: with a_k = μ_k − c_k, Σ_{i in k}(h_i − μ_k)(h_i − μ_k)ᵀ = scatter_k −
    s_k a_kᵀ − a_k s_kᵀ + n_k a_k a_kᵀ (s_k the shifted sum). The shift keeps the terms of the size of the spread
    within the class, so nothing cancels when the classes have collapsed (the shifted-data algorithm: Chan,
    Golub & LeVeque 1983); sums of raw second moments would lose every digit of a spread 1e-8 of the means.
    `state` lives on `device` (e.g. the CPU while the features come from a GPU: each batch's part is reduced on
    the features' device first, and only the classes it holds are moved). Used by `NCAccumulator(...,
    keep_features=False)`. `shift` (K, d), when given, fixes the shifts instead (every stream that passes the same
    shifts has statistics that simply add: analysis.torchmetrics_adapter sums them across processes).
    `state_dict()` / `load_state_dict()` save and restore the statistics exactly (tensors and plain values only).
    >>> import torch
    >>> st = SufficientStats(2, 1)
    >>> st.add(torch.tensor([[1.0], [3.0], [10.0], [14.0]], dtype=torch.float64), torch.tensor([0, 0, 1, 1]))
    >>> st.counts.tolist(), st.class_sums().sums.flatten().tolist()
    ([2, 2], [4.0, 24.0])
    """

    def __init__(self, K: int, d: int, *, dtype: torch.dtype = torch.float64, device: Any = "cpu",
                 shift: Any = None) -> None:
        self.K, self.d, self.dtype, self.device = K, d, dtype, torch.device(device)
        z = dict(dtype=torch.float64, device=self.device)
        self.counts = torch.zeros(K, dtype=torch.int64, device=self.device)
        # the shift is stored in the features' own dtype: it is one of the features, so it is exact there
        self.shift = torch.zeros(K, d, dtype=dtype, device=self.device)
        self.fixed_shift = shift is not None
        if shift is not None:
            given = as_tensor(shift, name="shift")
            if given.shape != (K, d):
                raise ValueError(f"shift must have shape (K, d) = {(K, d)}, got {tuple(given.shape)}")
            self.shift.copy_(given.to(device=self.device, dtype=dtype))
        self.shifted_sums = torch.zeros(K, d, **z)
        self.shifted_ss = torch.zeros(K, **z)
        self.scatter = torch.zeros(d, d, **z)
        self.predicted = 0  # samples that came with the classifier's decisions
        self.correct = 0

    @property
    def nbytes(self) -> int:
        """The memory of the state, in bytes."""
        return sum(t.numel() * t.element_size() for t in (self.counts, self.shift, self.shifted_sums,
                                                            self.shifted_ss, self.scatter))

    def add(self, H: Any, y: Any, predictions: Any = None) -> None:
        """Add one batch (features H (n, d), labels y (n,), optionally the classifier's decisions (n,))."""
        H = as_features(H)
        y = as_labels(y, device=H.device)
        _check_batch(H, y, self.K)
        if H.shape[0] == 0:
            return
        work = _work_dtype(H.dtype)
        classes, inverse = torch.unique(y, return_inverse=True)
        on_state = classes.to(self.device)
        new = self.counts[on_state] == 0
        if bool(new.any()) and not self.fixed_shift:
            # c_k = the first sample of a class new to the stream (the first row of that class in this batch)
            first = torch.full((len(classes),), H.shape[0], dtype=torch.int64, device=H.device)
            first.scatter_reduce_(0, inverse, torch.arange(H.shape[0], device=H.device), reduce="amin")
            rows = first[new.to(H.device)]
            self.shift[on_state[new]] = H[rows].to(device=self.device, dtype=self.dtype)
        shift = self.shift[on_state].to(device=H.device)
        D = torch.sub(H.to(work), shift.to(work)[inverse])  # h_i − c_{y_i}, in the working dtype
        part_sums = torch.zeros(len(classes), self.d, dtype=torch.float64, device=H.device)
        part_sums.index_add_(0, inverse, D.double())
        part_ss = torch.zeros(len(classes), dtype=torch.float64, device=H.device)
        part_ss.index_add_(0, inverse, torch.linalg.vector_norm(D, dim=1).double().square())
        self.scatter += (D.T @ D).double().to(self.device)
        self.shifted_sums.index_add_(0, on_state, part_sums.to(self.device))
        self.shifted_ss.index_add_(0, on_state, part_ss.to(self.device))
        self.counts.index_add_(0, on_state, torch.bincount(inverse, minlength=len(classes)).to(self.device))
        if predictions is not None:
            predictions = as_labels(predictions, device=H.device)
            if predictions.shape != y.shape:
                raise ValueError(f"predictions must have shape (n,) = {tuple(y.shape)}, got {tuple(predictions.shape)}")
            self.predicted += int(y.shape[0])
            self.correct += int((predictions == y).sum())

    def merge(self, other: SufficientStats) -> None:
        """Add another stream's statistics (its shifts moved onto ours: s_k += s'_k + n'_k δ_k, ss_k += ss'_k +
        2⟨s'_k, δ_k⟩ + n'_k‖δ_k‖², scatter += scatter' + Σ_k (s'_k δ_kᵀ + δ_k s'_kᵀ + n'_k δ_k δ_kᵀ),
        δ_k = c'_k − c_k)."""
        seen = self.counts > 0
        theirs = other.counts.to(self.device) > 0
        adopt = theirs & ~seen
        self.shift[adopt] = other.shift.to(device=self.device, dtype=self.dtype)[adopt]
        delta = other.shift.to(self.device).double() - self.shift.double()
        delta[~theirs] = 0
        s_other = other.shifted_sums.to(self.device)
        n_other = other.counts.to(self.device).double()
        cross = s_other.T @ delta
        self.scatter += other.scatter.to(self.device) + cross + cross.T + (delta * n_other[:, None]).T @ delta
        self.shifted_ss += (other.shifted_ss.to(self.device) + 2 * (s_other * delta).sum(1)
                            + n_other * delta.square().sum(1))
        self.shifted_sums += s_other + n_other[:, None] * delta
        self.counts += other.counts.to(self.device)
        self.predicted += other.predicted
        self.correct += other.correct

    STATE = ("counts", "shift", "shifted_sums", "shifted_ss", "scatter")

    def state_dict(self) -> dict[str, Any]:
        """The statistics as a dict of tensors (copies) and plain Python values: `torch.save` it, and
        `torch.load(f, weights_only=True)` reads it back; `load_state_dict` restores them exactly.
        >>> st = SufficientStats(2, 1)
        >>> st.add(torch.tensor([[1.0], [3.0]], dtype=torch.float64), torch.tensor([0, 1]))
        >>> sorted(SufficientStats(2, 1).load_state_dict(st.state_dict()).state_dict()) == sorted(st.state_dict())
        True
        """
        state: dict[str, Any] = {name: getattr(self, name).detach().clone() for name in self.STATE}
        state.update(K=self.K, d=self.d, dtype=str(self.dtype).removeprefix("torch."), fixed_shift=self.fixed_shift,
                     predicted=self.predicted, correct=self.correct)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> SufficientStats:
        """Restore the statistics of `state_dict()` (onto this object's device); ValueError naming what does not
        match: K, the dimension d, or a tensor of another shape. Returns self.
        >>> SufficientStats(3, 2).load_state_dict(SufficientStats(2, 2).state_dict())
        Traceback (most recent call last):
        ...
        ValueError: the state has K = 2 classes, these statistics K = 3
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be the dict of state_dict(), got {type(state).__name__}")
        missing = [k for k in (*self.STATE, "K", "d", "predicted", "correct") if k not in state]
        if missing:
            raise ValueError(f"state lacks {', '.join(missing)}: not a SufficientStats.state_dict()")
        if state["K"] != self.K:
            raise ValueError(f"the state has K = {state['K']} classes, these statistics K = {self.K}")
        if state["d"] != self.d:
            raise ValueError(f"the state has feature dimension d = {state['d']}, these statistics d = {self.d}")
        shapes = {"counts": (self.K,), "shift": (self.K, self.d), "shifted_sums": (self.K, self.d),
                  "shifted_ss": (self.K,), "scatter": (self.d, self.d)}
        for name, shape in shapes.items():
            t = state[name]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"state[{name!r}] must be a tensor of shape {shape}, got {got}")
        for name in self.STATE:
            mine = getattr(self, name)
            setattr(self, name, state[name].detach().to(device=self.device, dtype=mine.dtype, copy=True))
        self.fixed_shift = bool(state.get("fixed_shift", False))
        self.predicted, self.correct = int(state["predicted"]), int(state["correct"])
        return self

    def class_sums(self) -> ClassSums:
        """The per-class counts and feature sums Σ_{i in k} h_i = s_k + n_k c_k (float64)."""
        return ClassSums(self.counts.clone(), self.shifted_sums + self.counts[:, None].double() * self.shift.double())

    def second_moment(self, *, center: bool = False) -> torch.Tensor:
        """The d×d second moment of the features seen (float64), exactly from the shifted statistics: uncentered,
        Σ_i h_i h_iᵀ = scatter + Σ_k (s_k c_kᵀ + c_k s_kᵀ + n_k c_k c_kᵀ); `center=True`, Σ_i (h_i − μ_G)(h_i − μ_G)ᵀ
        (μ_G the mean of the samples) = the within-class scatter scatter − Σ_k s_k s_kᵀ/n_k plus Σ_k n_k (μ_k −
        μ_G)(μ_k − μ_G)ᵀ, with nothing subtracted at the size of μ_G. Its eigenvalues are the squared singular values
        of the stacked features: `analysis.rank.effective_rank_gram`, `rankme_gram`.
        >>> st = SufficientStats(2, 2)
        >>> st.add(torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]], dtype=torch.float64), torch.tensor([0, 0, 1]))
        >>> st.second_moment().tolist(), (3 * st.second_moment(center=True)).round().tolist()   # μ_G = (4/3, 2/3)
        ([[10.0, 0.0], [0.0, 4.0]], [[14.0, -8.0], [-8.0, 8.0]])
        """
        n = self.counts.double()
        c = self.shift.double()
        s = self.shifted_sums
        if not center:
            cross = s.T @ c  # Σ_k s_k c_kᵀ
            return self.scatter + cross + cross.T + (c * n[:, None]).T @ c
        seen = n > 0
        within = self.scatter - (s[seen] / n[seen, None]).T @ s[seen]  # Σ_k s_k s_kᵀ / n_k
        means = c[seen] + s[seen] / n[seen, None]
        M = means - (n[seen, None] * means).sum(0) / n[seen].sum()
        return within + (M * n[seen, None]).T @ M

    def metrics(self, W: Any = None, b: Any = None, *, global_mean: str = "samples", rtol: float = DEFAULT_RTOL,
                side: str = "auto", missing: str = "error",
                reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                pairwise: bool = True) -> dict[str, float]:
        """The metrics of `nc_metrics` from these statistics: every key exact except those that compare each
        sample with the final means — nc4 and ncc_accuracy are NaN — and `accuracy`, which is that of the
        decisions given with the batches (NaN unless every batch came with them). `reduce` sums over the shards
        of a data-parallel run: the counts and sums first (the global means μ_k), then each shard's scatter about
        μ_k (formed from its own shifts, so the shards' shifts need not agree)."""
        sums = self.class_sums()
        if reduce is not None:
            sums = map_fields(reduce, sums)
        geom = _geometry(sums, W, b, global_mean, torch.float64, project_W=False, side=side, missing=missing)
        scatter, ss = self._about(geom)
        decided = torch.tensor([float(self.predicted), float(self.correct)], dtype=torch.float64, device=self.device)
        if reduce is not None:
            scatter, ss, decided = reduce(scatter), reduce(ss), reduce(decided)
        scatter, ss = scatter.to(geom.means.device), ss.to(geom.means.device)[geom.present]
        M = geom.centered
        second = M @ scatter @ M.T if geom.side == "classes" else scatter
        none = torch.zeros((), dtype=torch.int64)
        out = _finalize(sums, geom, DeviationStats(second, ss, none, none, none), rtol, decisions=False,
                        pairwise=pairwise)
        total, correct = decided.tolist()
        if geom.W is not None and total == float(sums.counts.sum()) and total > 0:
            out["accuracy"] = correct / total
        return out

    def _about(self, geom: _Geometry) -> tuple[torch.Tensor, torch.Tensor]:
        """This stream's within-class scatter Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ (d×d) and per-class sums of
        squares about the means μ_k of `geom` (class docstring), its K×d temporaries freed on return."""
        present = geom.present.to(self.device)
        a = torch.zeros(self.K, self.d, dtype=torch.float64, device=self.device)
        a[present] = geom.means.to(self.device)
        a.sub_(self.shift)  # μ_k − c_k; the classes this stream has not seen contribute nothing
        a[self.counts == 0] = 0
        n = self.counts.double()
        cross = self.shifted_sums.T @ a
        ss = self.shifted_ss - 2 * (self.shifted_sums * a).sum(1) + n * a.square().sum(1)
        scatter = self.scatter - cross - cross.T
        a.mul_(n.sqrt()[:, None])  # Σ_k n_k a_k a_kᵀ = (√n a)ᵀ(√n a), in place: no second K×d array
        scatter += a.T @ a
        return scatter, ss


def _check_batch(H: torch.Tensor, y: torch.Tensor, K: int) -> None:
    if H.shape[0] != y.shape[0]:
        raise ValueError(f"H has {H.shape[0]} rows but y has {y.shape[0]} labels")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= K):
        raise ValueError(f"labels must lie in 0..{K - 1}, got range {int(y.min())}..{int(y.max())}")


def _check_nonempty(counts: torch.Tensor) -> None:
    empty = (counts == 0).nonzero().flatten()
    if len(empty):
        shown = empty[:20].tolist()
        more = f" and {len(empty) - 20} more" if len(empty) > 20 else ""
        raise ValueError(f"classes without samples: {shown}{more}; class means are undefined (pass "
                         "missing=\"exclude\" to measure the classes present)")


def gnc_metrics(H: Any, y: Any, W: Any = None, K: int | None = None, s: float = 1.0,
                pairs_W: CosinePairStats | None = None,
                reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
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
    Variances are over the K(K−1)/2 pairs (ddof = 0), summed over K×K tiles (no K×K matrix). Unlike NC2, these
    are meaningful for K > d + 1, where no simplex ETF exists (there the distance variances of a spherical code
    are not 0). `pairs_W`: `analysis.pairwise.cosine_pair_stats(W, s)` where the caller has it. `reduce`: H, y are
    one shard of the rows of a data-parallel run and `reduce` sums over the shards (K must be given): the class sums
    of the rows and of the unit rows, and the count, are reduced, so the measures are those of the union.
    >>> import torch
    >>> H = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    >>> out = gnc_metrics(H, [0, 1, 2]); round(out["min_angle_means"], 9), out["spherical_spread"]
    (90.0, 0.0)
    """
    from analysis.uniformity import normalize_rows

    H = as_features(H).double()
    y = as_labels(y, device=H.device)
    K = int(y.max()) + 1 if K is None else K
    if reduce is None:
        means, count = class_means(H, y, K), len(y)
    else:
        sums = map_fields(reduce, class_sums(H, y, K))
        _check_nonempty(sums.counts)
        means, count = sums.sums / sums.counts.unsqueeze(1), int(sums.counts.sum())
    if bool((means.norm(dim=1) == 0).any()):
        # a class mean at 0 has no direction: the measures are undefined, not 90° or 0.5
        out = {"energy_means": math.nan, "min_angle_means": math.nan, "spherical_spread": math.nan,
               "distance_var_means_sphere": math.nan, "log_distance_var_means_sphere": math.nan}
    else:
        st = cosine_pair_stats(means, s)
        out = {"energy_means": st.energy, "min_angle_means": math.degrees(st.min_angle)}
        # mean_i ⟨ĥ_i, μ̂_{y_i}⟩ = (1/N) Σ_k ⟨Σ_{i in k} ĥ_i, μ̂_k⟩: class sums of the unit rows, no N × d gather
        unit_sums = class_sums(normalize_rows(H), y, K).sums
        if reduce is not None:
            unit_sums = reduce(unit_sums)
        out["spherical_spread"] = 1 - float((unit_sums * normalize_rows(means)).sum()) / count
        out["distance_var_means_sphere"] = st.dist_var
        out["log_distance_var_means_sphere"] = st.log_dist_var
    if W is not None:
        Wt = as_features(W, device=H.device).double()
        st = pairs_W if pairs_W is not None else cosine_pair_stats(Wt, s)
        out["energy_W"] = st.energy
        out["min_angle_W"] = math.degrees(st.min_angle)
        if bool((Wt.norm(dim=1) == 0).any()):
            out["distance_var_W"] = out["log_distance_var_W"] = math.nan  # a zero row has no direction
        else:
            out["distance_var_W"], out["log_distance_var_W"] = st.dist_var, st.log_dist_var
    return out
