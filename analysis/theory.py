"""Closed-form global optima of the unconstrained-features model (DESIGN §5.2).

Objective (our convention): F(W, H, b) = (1/N) Σ_i ℓ(W h_i + b, y_i) + λ_W/2‖W‖² + λ_H/2‖H‖² + λ_b/2‖b‖².
The balanced-factorization identity min_{HWᵀ=Z} λ_W/2‖W‖² + λ_H/2‖H‖² = √(λ_Wλ_H)‖Z‖_* turns the
UFM into a convex problem in the logits Z (N×K), whose optimum is known in closed form for:

- MSE, ℓ = ½‖z − s·e_y‖² (s the target scale): singular-value shrinkage of the targets by
  τ = N√(λ_Wλ_H). Bias-free: each class column of Y has singular value σ_k = s√n_k and shrinks to
  (σ_k − τ)₊. Free (unregularized) bias, balanced: the centered targets s(Y − 11ᵀ/K) shrink the same
  way (K − 1 singular values s√n) and b = s/K.
- CE (Zhu et al. 2021), balanced, d ≥ K − 1: W a scaled simplex ETF, h = √(λ_W/(nλ_H))·w_y, every
  wrong class gets probability c = √(nλ_Wλ_H), logit gap u* = ln(1/c − (K − 1)), regularizer
  (K − 1)·c·u*. Label smoothing α: wrong classes get probability c + α/K instead.
Everything collapses to zero when the shrinkage exceeds the signal (Kc ≥ 1 for balanced MSE and CE).

Each function returns a `Target`: a name, whether it applies to the configuration (and why not), and
the predicted quantities under the same keys as the measurements (`loss` is the full objective).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from analysis.metrics import etf_distance

# K×K Gram matrices (and dense factorizations of K×K logits) are built only up to this K; beyond it a `Target`
# has no `grams` (the grams check does not apply) and the predictions come from the count-group forms below,
# whose cost grows with the number G of distinct counts, not with K (a K = 32 768 Zipf vocabulary has G ~ 100)
GRAMS_MAX_K = 1000


@dataclass
class Target:
    """A theory prediction: `predicted` maps measured quantities to their predicted values."""

    name: str
    applies: bool
    reason: str = ""
    predicted: dict[str, float] = field(default_factory=dict)
    # predicted K×K Gram matrices: "W" (w_j·w_k) and "means" (centered class means, μ_G the sample mean); empty
    # for K > GRAMS_MAX_K (then the grams check does not apply)
    grams: dict[str, np.ndarray] = field(default_factory=dict)
    # False where the optimum is not unique (a continuum of optimal points): `predicted` then holds only what
    # every optimum shares (the value, say), and `note` says what is left undetermined
    unique: bool = True
    note: str = ""

    def to_dict(self) -> dict:
        out = {"name": self.name, "applies": self.applies, "reason": self.reason, "unique": self.unique,
               "predicted": dict(self.predicted), "grams": {k: v.tolist() for k, v in self.grams.items()}}
        return {**out, "note": self.note} if self.note else out


def etf_gram(K: int) -> np.ndarray:
    """Gram matrix of the unit-norm simplex ETF: (K/(K−1))(I − 11ᵀ/K)."""
    return (K / (K - 1)) * (np.eye(K) - np.ones((K, K)) / K)


def not_applicable(name: str, reason: str) -> Target:
    return Target(name=name, applies=False, reason=reason)


def _shrinkage_objective(sigmas: np.ndarray, tau: float, N: int, root_lam: float) -> float:
    """min_z (1/2N)(σ − z)² + √(λ_Wλ_H)·z summed over singular values: z = (σ − τ)₊, τ = N√(λ_Wλ_H)."""
    kept = np.minimum(sigmas, tau)
    return float((0.5 * kept**2).sum() / N + root_lam * np.clip(sigmas - tau, 0, None).sum())


def mse_bias_free(counts: Sequence[int], d: int, wd_W: float, wd_H: float,
                  target_scale: float = 1.0) -> Target:
    """Bias-free MSE + weight decay, any class counts: logits Z_k = s(1 − N√(λ_Wλ_H)/(s√n_k))₊·Y_k.

    Rows of W are orthogonal with ‖w_k‖² = √(λ_H/λ_W)(s√n_k − τ)₊; all samples of class k share one
    feature vector parallel to w_k. Needs d at least the number of classes that do not vanish.
    """
    name = "mse_bias_free"
    counts = np.asarray(counts, dtype=float)
    K, N = len(counts), int(counts.sum())
    if wd_W <= 0 or wd_H <= 0:
        return not_applicable(name, "needs wd_W > 0 and wd_H > 0 (no minimizer without weight decay)")
    root_lam = math.sqrt(wd_W * wd_H)
    tau = N * root_lam
    sigmas = target_scale * np.sqrt(counts)
    shrunk = np.clip(sigmas - tau, 0, None)  # singular values of Z, one per class
    rank = int((shrunk > 0).sum())
    if d < rank:
        return not_applicable(name, f"needs d >= {rank} orthogonal classifier rows (d={d}, K={K})")
    nuclear = float(shrunk.sum())
    p: dict[str, float] = {
        "loss": _shrinkage_objective(sigmas, tau, N, root_lam),
        "W_norm_sq": math.sqrt(wd_H / wd_W) * nuclear,
        "H_norm_sq": math.sqrt(wd_W / wd_H) * nuclear,
    }
    if nuclear == 0:
        return Target(name, True, "collapse to zero: N·sqrt(wd_W·wd_H) >= s·sqrt(n_k) for every class", p)
    # logit of a class-k sample on its own class, s(σ_k − τ)₊/σ_k, averaged over samples; 0 elsewhere
    z_true = target_scale * shrunk / sigmas
    p["z_true"] = float((counts * z_true).sum() / N)
    p["z_other"] = 0.0
    p["logit_gap"] = p["z_true"]
    if (shrunk > 0).all() and K > GRAMS_MAX_K:
        # the same NC2/NC3 in the count-group algebra (diagonal W and means, centering C = I − 1nᵀ/N): no K×K
        n, m, _ = class_groups(counts)
        s_n = np.clip(target_scale * np.sqrt(n) - tau, 0, None)
        means = GroupMatrix.diagonal(np.sqrt(s_n) * (wd_W / wd_H) ** 0.25 / np.sqrt(n), m)
        W = GroupMatrix.diagonal(np.sqrt(s_n) * (wd_H / wd_W) ** 0.25, m)
        M = (GroupMatrix.identity(m) - GroupMatrix.outer(np.ones(len(m)), n / N, m)) @ means
        nc2, nc3 = (x if x > 1e-12 else 0.0 for x in ((M @ M.T).etf_distance(), (W @ M.T).etf_distance()))
        p.update(nc1=0.0, nc2=nc2, nc3=nc3, nc4=0.0, accuracy=1.0)
        return Target(name, True, f"K = {K} > {GRAMS_MAX_K}: the K×K Grams are not built", p)
    if (shrunk > 0).all():
        # class-k feature: (σ_k − τ)^{1/2} (λ_W/λ_H)^{1/4} / √n_k along an orthonormal direction r_k,
        # w_k = (σ_k − τ)^{1/2} (λ_H/λ_W)^{1/4} r_k: the predicted NC2/NC3 follow from these
        means = np.diag(np.sqrt(shrunk) * (wd_W / wd_H) ** 0.25 / np.sqrt(counts))
        W = np.diag(np.sqrt(shrunk) * (wd_H / wd_W) ** 0.25)
        mu_G = (counts[:, None] * means).sum(0) / N
        M = means - mu_G
        # round-off of the ETF distance (~1e-16) is not a prediction: balanced classes give exactly 0
        nc2, nc3 = (x if x > 1e-12 else 0.0 for x in (etf_distance(M @ M.T), etf_distance(W @ M.T)))
        p.update(nc1=0.0, nc2=nc2, nc3=nc3, nc4=0.0, accuracy=1.0)
        return Target(name, True, "", p, {"W": W @ W.T, "means": M @ M.T})
    return Target(name, True, "", p)


def mse_free_bias(K: int, n: int, d: int, wd_W: float, wd_H: float,
                  target_scale: float = 1.0) -> Target:
    """MSE + weight decay with an unregularized bias, balanced classes (n per class): the λ_b = 0 case of
    `mse_regularized_bias`. Z = s(1 − Kc/s)₊(Y − 11ᵀ/K) with c = √(nλ_Wλ_H), b = s/K·1, W a scaled
    simplex ETF; F* = (K−1)c(1 − Kc/2) for s = 1. Needs d ≥ K − 1.
    """
    target = mse_regularized_bias(K, n, d, wd_W, wd_H, 0.0, target_scale)
    target.name = "mse_free_bias"
    return target


@dataclass
class Factorized:
    """A UFM point built from per-class logits: the balanced factorization and what it predicts."""

    W: np.ndarray  # (K, r)
    features: np.ndarray  # (K, r) the feature of every class-k sample
    class_logits: np.ndarray  # (K, K) row k = W h_k + b
    rank: int
    predicted: dict[str, float]
    grams: dict[str, np.ndarray]  # "W" and "means" (centered at the sample mean), K×K


def factorize_logits(X: np.ndarray, b: np.ndarray, counts: Sequence[float], wd_W: float, wd_H: float,
                     loss: float, rank_rtol: float = 1e-8) -> Factorized:
    """The UFM point of least weight decay with class logits D^{-1/2}X + b (X = D^{1/2}Ẑ, D = diag(n_k)).

    A balanced factorization X = U S Vᵀ gives W = V S^{1/2}(λ_H/λ_W)^{1/4} and the class-k feature
    h_k = (D^{-1/2}U S^{1/2})_k (λ_W/λ_H)^{1/4}, so that λ_W/2‖W‖² + λ_H/2‖H‖² = √(λ_Wλ_H)‖X‖_*.
    Predicts `loss` (given), W_norm_sq, H_norm_sq, z_true, z_other, logit_gap, b_mean (with b ≠ 0),
    nc1–nc3, nc2_W, and nc4 = 0 with accuracy 1 where every class's own logit is the largest. K×K (an SVD of X):
    for block-symmetric X at large K, `factorize_groups` gives the same predictions from the count groups.
    >>> fac = factorize_logits(2 * np.eye(3), np.zeros(3), [4, 4, 4], 1e-2, 1e-2, loss=0.1)
    >>> fac.rank, round(fac.predicted["W_norm_sq"], 12), round(fac.predicted["z_true"], 12)   # ‖X‖_* = 6
    (3, 6.0, 1.0)
    """
    counts = np.asarray(counts, dtype=float)
    K, N = len(counts), counts.sum()
    U, S, Vt = np.linalg.svd(np.asarray(X, dtype=float))
    r = int((S > rank_rtol * max(S.max(), 1e-300)).sum())
    U, S, Vt = U[:, :r], S[:r], Vt[:r]
    W = Vt.T * np.sqrt(S) * (wd_H / wd_W) ** 0.25
    feats = (U / np.sqrt(counts)[:, None]) * np.sqrt(S) * (wd_W / wd_H) ** 0.25
    logits = feats @ W.T + b
    z_true = np.diag(logits)
    z_other = (logits.sum(1) - z_true) / (K - 1)
    scale = max(1.0, float(np.abs(logits).max()))

    def snap(v: float) -> float:
        """Round-off (~1e-9 of the logits) is not a prediction: report it as 0."""
        return 0.0 if abs(v) <= 1e-8 * scale else v

    p: dict[str, float] = {
        "loss": float(loss),
        "W_norm_sq": float((W**2).sum()),
        "H_norm_sq": float(counts @ (feats**2).sum(1)),
        "z_true": snap(float(counts @ z_true / N)),
        "z_other": snap(float(counts @ z_other / N)),
        "logit_gap": snap(float(counts @ (z_true - z_other) / N)),
    }
    if np.any(b):
        p["b_mean"] = snap(float(np.mean(b)))
    M = feats - counts @ feats / N
    if r > 0:
        p.update(nc1=0.0, nc2=etf_distance(M @ M.T), nc3=etf_distance(W @ M.T), nc2_W=etf_distance(W @ W.T))
        if (logits.argmax(1) == np.arange(K)).all():
            p.update(nc4=0.0, accuracy=1.0)
    return Factorized(W, feats, logits, r, p, {"W": W @ W.T, "means": M @ M.T})


# ----- count groups: K×K matrices constant on the blocks of classes of equal counts ------------------------------


@dataclass
class GroupMatrix:
    """A K×K matrix constant on the blocks of count groups: X = Q B Qᵀ + Σ_g b_g P_g.

    Q (K×G) holds the normalized group indicators (column g: 1/√m_g on the m_g classes of group g) and P_g
    is the projector onto the zero-sum vectors of group g (on the group: I − 11ᵀ/m_g); b_g is 0 for a group
    of one class (P_g = 0). Entries, for a class of group g: X_kk = (B_gg + (m_g − 1)b_g)/m_g, X_kj =
    (B_gg − b_g)/m_g for another class j of the group, X_kj = B_gh/√(m_g m_h) for j in group h ≠ g. Since
    QᵀQ = I, QᵀP_g = 0 and P_gP_h = δ_gh P_g, these matrices form an algebra acting on (B, b) alone:
    (QBQᵀ + Σ b_gP_g)(QCQᵀ + Σ c_gP_g) = Q BC Qᵀ + Σ b_gc_g P_g, the transpose is (Bᵀ, b), and the
    singular values are those of B and |b_g| with multiplicity m_g − 1 (`analysis.nuclear_program`). So
    norms, traces, ETF distances, square roots and singular values of K×K matrices cost O(G³), not O(K³):
    this is how the count-group certificate's optimum is read at K = 10⁵. Example (classes 0, 1, 2 in a
    group, class 3 alone):
    >>> X = GroupMatrix.from_entries(own=[2.0, 5.0], within=[0.5, 0.0], cross=[[0.0, 1.0], [-1.0, 0.0]], m=[3, 1])
    >>> X.dense([0, 0, 0, 1])
    array([[ 2. ,  0.5,  0.5,  1. ],
           [ 0.5,  2. ,  0.5,  1. ],
           [ 0.5,  0.5,  2. ,  1. ],
           [-1. , -1. , -1. ,  5. ]])
    >>> bool(np.allclose(sorted(X.singular_values(expand=True)),
    ...                  sorted(np.linalg.svd(X.dense([0, 0, 0, 1]), compute_uv=False))))
    True
    """

    B: np.ndarray  # (G, G)
    b: np.ndarray  # (G,)
    m: np.ndarray  # (G,) classes per group

    def __post_init__(self) -> None:
        self.m = np.asarray(self.m, dtype=float)
        self.B = np.asarray(self.B, dtype=float).reshape(len(self.m), len(self.m))
        self.b = np.where(self.m > 1, np.asarray(self.b, dtype=float), 0.0)

    # ----- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_entries(cls, own: Sequence[float], within: Sequence[float], cross: np.ndarray,
                     m: Sequence[float]) -> GroupMatrix:
        """From the entries: `own` X_kk, `within` X_kj for j ≠ k in the same group, `cross[g, h]` X_kj for j in
        group h ≠ g (its diagonal is ignored)."""
        m = np.asarray(m, dtype=float)
        own, within = np.asarray(own, dtype=float), np.asarray(within, dtype=float)
        B = np.array(cross, dtype=float) * np.sqrt(np.outer(m, m))
        np.fill_diagonal(B, own + (m - 1) * within)
        return cls(B, own - within, m)

    @classmethod
    def diagonal(cls, values: Sequence[float], m: Sequence[float]) -> GroupMatrix:
        """diag(v_k) with v_k = values[g] for the classes of group g."""
        v = np.asarray(values, dtype=float)
        return cls(np.diag(v), v, m)

    @classmethod
    def identity(cls, m: Sequence[float]) -> GroupMatrix:
        return cls.diagonal(np.ones(len(m)), m)

    @classmethod
    def ones(cls, m: Sequence[float]) -> GroupMatrix:
        """11ᵀ (Qᵀ1 = √m)."""
        r = np.sqrt(np.asarray(m, dtype=float))
        return cls(np.outer(r, r), np.zeros(len(r)), m)

    @classmethod
    def outer(cls, u: Sequence[float], v: Sequence[float], m: Sequence[float]) -> GroupMatrix:
        """u vᵀ for class vectors constant on groups (u_k = u[g] for the classes of group g)."""
        r = np.sqrt(np.asarray(m, dtype=float))
        return cls(np.outer(r * np.asarray(u, dtype=float), r * np.asarray(v, dtype=float)), np.zeros(len(r)), m)

    # ----- the algebra ----------------------------------------------------------------------------------------
    def __matmul__(self, other: GroupMatrix) -> GroupMatrix:
        return GroupMatrix(self.B @ other.B, self.b * other.b, self.m)

    def __add__(self, other: GroupMatrix) -> GroupMatrix:
        return GroupMatrix(self.B + other.B, self.b + other.b, self.m)

    def __sub__(self, other: GroupMatrix) -> GroupMatrix:
        return GroupMatrix(self.B - other.B, self.b - other.b, self.m)

    def __mul__(self, c: float) -> GroupMatrix:
        return GroupMatrix(c * self.B, c * self.b, self.m)

    __rmul__ = __mul__

    @property
    def T(self) -> GroupMatrix:  # noqa: N802 - the transpose, as numpy names it
        return GroupMatrix(self.B.T, self.b, self.m)

    @property
    def K(self) -> int:  # noqa: N802
        return int(round(float(self.m.sum())))

    # ----- what a K×K matrix is measured by -------------------------------------------------------------------
    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """(own, group): X_kk per group, and group[g, h] = X_kj for j in group h (j ≠ k; the diagonal: within g)."""
        m = self.m
        group = self.B / np.sqrt(np.outer(m, m))
        own = (np.diag(self.B) + (m - 1) * self.b) / m
        np.fill_diagonal(group, (np.diag(self.B) - self.b) / m)
        return own, group

    def dense(self, class_group: Sequence[int]) -> np.ndarray:
        """The full K×K matrix, class k in group class_group[k] (for tests and small K)."""
        cg = np.asarray(class_group, dtype=int)
        own, group = self.entries()
        X = group[np.ix_(cg, cg)]
        np.fill_diagonal(X, own[cg])
        return X

    def frobenius(self) -> float:
        """‖X‖_F = (‖B‖_F² + Σ_g (m_g − 1) b_g²)^{1/2}."""
        return math.sqrt(float((self.B**2).sum() + ((self.m - 1) * self.b**2).sum()))

    def trace(self) -> float:
        return float(np.trace(self.B) + ((self.m - 1) * self.b).sum())

    def singular_values(self, expand: bool = False) -> np.ndarray:
        """Those of B, then |b_g| for the groups of more than one class (`expand`: each m_g − 1 times)."""
        S = np.linalg.svd(self.B, compute_uv=False)
        grouped = self.m > 1
        d = np.abs(self.b[grouped])
        return np.concatenate([S, np.repeat(d, (self.m[grouped] - 1).astype(int)) if expand else d])

    def abs_right(self) -> GroupMatrix:
        """(XᵀX)^{1/2}: V_B S V_Bᵀ and |b|."""
        _, S, Vt = np.linalg.svd(self.B)
        return GroupMatrix((Vt.T * S) @ Vt, np.abs(self.b), self.m)

    def abs_left(self) -> GroupMatrix:
        """(XXᵀ)^{1/2}: U_B S U_Bᵀ and |b|."""
        U, S, _ = np.linalg.svd(self.B)
        return GroupMatrix((U * S) @ U.T, np.abs(self.b), self.m)

    def distance(self, reference: GroupMatrix) -> float:
        """‖X/‖X‖_F − R/‖R‖_F‖_F, the normalized Gram distance of `analysis.metrics.gram_distance` (NaN if X = 0),
        computed as the norm of the difference (no cancellation when it is small)."""
        a, r = self.frobenius(), reference.frobenius()
        if a == 0:
            return math.nan
        return (self * (1 / a) - reference * (1 / r)).frobenius()

    def etf_distance(self) -> float:
        """`analysis.metrics.etf_distance`: the distance to the simplex ETF's Gram I − 11ᵀ/K.
        >>> from analysis.metrics import etf_distance
        >>> X = GroupMatrix(np.array([[3.0, 1.0], [1.0, 2.0]]), np.array([0.5, 0.0]), [4, 1])
        >>> abs(X.etf_distance() - etf_distance(X.dense([0, 0, 0, 0, 1]))) < 1e-15
        True
        """
        return self.distance(GroupMatrix.identity(self.m) - GroupMatrix.ones(self.m) * (1 / self.K))

    def group_cosines(self) -> np.ndarray:
        """Of a Gram matrix: the cosine between two classes of the same group, X_kj/X_kk (NaN for a group of one
        class or a zero diagonal)."""
        own, group = self.entries()
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = np.diag(group) / own
        return np.where((self.m > 1) & (own > 0), cos, math.nan)


def class_groups(counts: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, m, class_group): the distinct counts in increasing order, the classes per count, and the group of
    every class (np.unique).
    >>> [a.tolist() for a in class_groups([5, 2, 5, 5])]
    [[2.0, 5.0], [1, 3], [1, 0, 1, 1]]
    """
    n, class_group, m = np.unique(np.asarray(counts, dtype=float), return_inverse=True, return_counts=True)
    return n, m, class_group


@dataclass
class GroupFactorized:
    """`factorize_groups`: the count-group form of `Factorized`, with no K×K array."""

    rank: int
    predicted: dict[str, float]
    singular_values: np.ndarray  # of B (G values), untruncated
    within: np.ndarray  # |d_g| per group (0 for a group of one class), untruncated
    collapsed: np.ndarray  # (G,) bool: a group of >= 2 classes whose within-group part is 0 (rank_rtol)
    grams: dict[str, GroupMatrix]  # "W" (WWᵀ), "means" (centered class means), "features" (uncentered)


def factorize_groups(X: GroupMatrix, b: Sequence[float], n: Sequence[float], wd_W: float, wd_H: float,
                     loss: float, rank_rtol: float = 1e-8) -> GroupFactorized:
    """`factorize_logits` for a block-symmetric X = D^{1/2}Ẑ (`GroupMatrix`, groups of `n[g]` samples per class)
    and a bias constant on groups, without any K×K array: the same predictions from B (G×G) and b (G).

    The balanced factorization X = USVᵀ gives WWᵀ = κ²(XᵀX)^{1/2}, the class features' Gram
    κ⁻²D^{-1/2}(XXᵀ)^{1/2}D^{-1/2}, and W Fᵀ = Xᵀ D^{-1/2} (κ = (λ_H/λ_W)^{1/4}), all in the algebra of
    `GroupMatrix`, as are the centering C = I − 1nᵀ/N and the logits D^{-1/2}X + 1bᵀ; singular values below
    rank_rtol × the largest are dropped as in `factorize_logits`. Group g collapses (its classes have identical
    classifiers and features) iff its within-group singular value |d_g| is dropped. Ties of a class's own logit
    with another class count as a mistake (nc4, accuracy not predicted); `factorize_logits` follows argmax.
    >>> X = GroupMatrix.from_entries([2.0, 1.5], [0.0, -0.75], np.zeros((2, 2)), [1, 3])
    >>> n, cg = np.array([4.0, 4.0]), [0, 1, 1, 1]
    >>> fg = factorize_groups(X, np.zeros(2), n, 1e-2, 1e-2, loss=0.1)
    >>> fd = factorize_logits(X.dense(cg), np.zeros(4), n[cg], 1e-2, 1e-2, loss=0.1)
    >>> fg.rank == fd.rank, all(abs(fg.predicted[k] - fd.predicted[k]) < 1e-12 for k in fd.predicted)
    (True, True)
    """
    m = X.m
    n = np.asarray(n, dtype=float)
    b = np.asarray(b, dtype=float)
    K, N = X.K, float(m @ n)
    U, S, Vt = np.linalg.svd(X.B)
    within = np.abs(X.b)
    top = max(float(S.max()) if S.size else 0.0, float(within.max()) if within.size else 0.0)
    threshold = rank_rtol * max(top, 1e-300)
    S_r = np.where(S > threshold, S, 0.0)
    kept_d = (within > threshold) & (m > 1)
    Xr = GroupMatrix((U * S_r) @ Vt, np.where(kept_d, X.b, 0.0), m)
    rank = int((S_r > 0).sum() + ((m - 1) * kept_d).sum())
    nuclear = float(S_r.sum() + ((m - 1) * np.abs(Xr.b)).sum())
    kappa_sq = math.sqrt(wd_H / wd_W)
    # the logits of a class-g sample: own, on the other classes of its group, on a class of group h
    own, group = Xr.entries()
    sqrt_n = np.sqrt(n)
    z_own = own / sqrt_n + b
    z_group = group / sqrt_n[:, None] + b[None, :]
    mult = m[None, :] - np.eye(len(m))  # how many classes of group h a class-g row meets (0: none)
    present = mult > 0
    z_other = np.where(present, mult * z_group, 0.0).sum(1) / (K - 1)
    weight = m * n / N
    scale = max(1.0, float(np.abs(z_own).max()), float(np.abs(z_group[present]).max()) if present.any() else 0.0)

    def snap(v: float) -> float:
        return 0.0 if abs(v) <= 1e-8 * scale else v

    p: dict[str, float] = {
        "loss": float(loss),
        "W_norm_sq": kappa_sq * nuclear,
        "H_norm_sq": nuclear / kappa_sq,
        "z_true": snap(float(weight @ z_own)),
        "z_other": snap(float(weight @ z_other)),
        "logit_gap": snap(float(weight @ (z_own - z_other))),
    }
    if np.any(b):
        p["b_mean"] = snap(float(m @ b / K))
    grams: dict[str, GroupMatrix] = {}
    if rank > 0:
        root_inv = GroupMatrix.diagonal(1 / sqrt_n, m)
        center = GroupMatrix.identity(m) - GroupMatrix.outer(np.ones(len(m)), n / N, m)  # C = I − 1nᵀ/N
        gram_W = Xr.abs_right() * kappa_sq
        gram_F = (root_inv @ Xr.abs_left() @ root_inv) * (1 / kappa_sq)
        gram_M = center @ gram_F @ center.T
        WM = Xr.T @ root_inv @ center.T
        p.update(nc1=0.0, nc2=gram_M.etf_distance(), nc3=WM.etf_distance(), nc2_W=gram_W.etf_distance())
        others = np.where(present, z_group, -math.inf).max(1)
        if (z_own > others).all():
            p.update(nc4=0.0, accuracy=1.0)
        grams = {"W": gram_W, "means": gram_M, "features": gram_F}
    collapsed = (m > 1) & ~kept_d
    return GroupFactorized(rank, p, S, within, collapsed, grams)


def mse_free_bias_counts(counts: Sequence[int], d: int, wd_W: float, wd_H: float,
                         target_scale: float = 1.0) -> Target:
    """MSE + weight decay with an unregularized bias, any class counts (derived here):

    the optimal bias for fixed Z is s·w − z̄ (w = n/N), which leaves ½‖C(sY − Z)‖²/N (C the centering);
    centering Z does not increase ‖Z‖_*, so Z* = SVT_{Nρ}(s·CY), a singular-value shrinkage of the
    centered labels, and b* = s·n/N. In class form: X* = SVT_{Nρ}(s·D^{1/2}(I − 1wᵀ)), ρ = √(λ_Wλ_H),
    whose singular values are s·√(eigenvalues of D − nnᵀ/N). Balanced: `mse_free_bias`.
    >>> t = mse_free_bias_counts([50, 20, 5], d=8, wd_W=1e-3, wd_H=1e-3)
    >>> t.name, round(t.predicted["b_mean"], 12)   # b = n_k/N: mean 1/K
    ('mse_free_bias', 0.333333333333)
    """
    name = "mse_free_bias"
    if wd_W <= 0 or wd_H <= 0:
        return not_applicable(name, "needs wd_W > 0 and wd_H > 0 (no minimizer without weight decay)")
    counts = np.asarray(counts, dtype=float)
    K, N = len(counts), counts.sum()
    w = counts / N
    root_lam = math.sqrt(wd_W * wd_H)
    tau = N * root_lam
    if K > GRAMS_MAX_K:
        return _mse_free_bias_groups(counts, d, wd_W, wd_H, target_scale)
    U, S, Vt = np.linalg.svd(target_scale * np.sqrt(counts)[:, None] * (np.eye(K) - w[None, :]))
    shrunk = np.clip(S - tau, 0, None)
    rank = int((shrunk > 0).sum())
    if d < rank:
        return not_applicable(name, f"needs d >= {rank} (d={d})")
    X = (U * shrunk) @ Vt
    fac = factorize_logits(X, target_scale * w, counts, wd_W, wd_H, _shrinkage_objective(S, tau, N, root_lam))
    reason = ("imbalanced: Z = the singular-value shrinkage of the centered labels s(Y − 1wᵀ) by "
              f"N·sqrt(wd_W·wd_H), b = s·n_k/N; {rank} of {K - 1} directions survive")
    return Target(name, True, reason, fac.predicted, fac.grams if rank else {})


def _mse_free_bias_groups(counts: np.ndarray, d: int, wd_W: float, wd_H: float, target_scale: float) -> Target:
    """`mse_free_bias_counts` for K > GRAMS_MAX_K, in the count-group algebra: s·D^{1/2}(I − 1wᵀ) is a
    `GroupMatrix`, its singular-value shrinkage acts on B (G×G) and on the within-group values s√n_g."""
    name = "mse_free_bias"
    n, m, _ = class_groups(counts)
    K, N = len(counts), float(counts.sum())
    root_lam = math.sqrt(wd_W * wd_H)
    tau = N * root_lam
    X0 = (GroupMatrix.diagonal(np.sqrt(n), m) @ (GroupMatrix.identity(m) - GroupMatrix.outer(np.ones(len(m)), n / N, m))
          ) * target_scale
    U, S, Vt = np.linalg.svd(X0.B)
    X = GroupMatrix((U * np.clip(S - tau, 0, None)) @ Vt, np.sign(X0.b) * np.clip(np.abs(X0.b) - tau, 0, None), m)
    sigmas = X0.singular_values(expand=True)
    shrunk = np.clip(sigmas - tau, 0, None)
    rank = int((shrunk > 0).sum())
    if d < rank:
        return not_applicable(name, f"needs d >= {rank} (d={d})")
    fac = factorize_groups(X, target_scale * n / N, n, wd_W, wd_H, _shrinkage_objective(sigmas, tau, N, root_lam))
    reason = ("imbalanced: Z = the singular-value shrinkage of the centered labels s(Y − 1wᵀ) by "
              f"N·sqrt(wd_W·wd_H), b = s·n_k/N; {rank} of {K - 1} directions survive (K = {K} > {GRAMS_MAX_K}: "
              "computed on the count groups, the K×K Grams are not built)")
    return Target(name, True, reason, fac.predicted)


def group_collapse_threshold(counts: Sequence[int], wd_W: float, wd_H: float, margin: float = 1.0) -> dict[int, bool]:
    """Which count groups have identical classifiers (and class means) at the UFM optimum (derived here).

    For CE, LS (margin 1 − α) and MSE (margin s), with or without a bias: at a block-symmetric point whose
    group-g classes coincide, a class-g sample has equal logits on all classes of its group, so the
    gradient's within-group singular value is exactly margin·w_g/√n_g = margin·√n_g/N; the nuclear norm
    keeps the group collapsed iff that is <= ρ = √(λ_Wλ_H):  collapsed ⟺ margin·√n_g <= N·ρ.
    Returns {count: collapsed} for every count shared by at least two classes.
    >>> group_collapse_threshold([1000] * 7 + [10] * 3, 5e-4, 5e-4)
    {10: True, 1000: False}
    """
    counts = np.asarray(counts, dtype=float)
    values, multiplicity = np.unique(counts, return_counts=True)
    N, rho = counts.sum(), math.sqrt(wd_W * wd_H)
    return {int(v) if float(v).is_integer() else float(v): bool(margin * math.sqrt(v) <= N * rho)
            for v, m in zip(values, multiplicity, strict=True) if m >= 2}


def minority_parallel_ratio(K_A: int, K_B: int, n_A: float, wd_W: float, wd_H: float, margin: float = 1.0) -> float:
    """The imbalance ratio R = n_A/n_B from which the K_B >= 2 minority classifiers of the UFM optimum
    coincide (two count groups, CE/LS/MSE, with or without a bias), in closed form (derived here).

    `group_collapse_threshold` with N = K_A n_A + K_B n_B reads, for x = 1/√R and a = ρ√n_A/margin,
    K_B a x² − x + K_A a >= 0, so the minority group collapses for x <= x₋ = (1 − √(1 − 4K_AK_B a²))/(2K_B a):
        R* = 1/x₋² = (2 K_B a / (1 − √(1 − 4 K_A K_B a²)))².
    Returns 1.0 when 4K_AK_Ba² >= 1 (collapsed at every ratio: the balanced problem is already at 0).
    >>> round(minority_parallel_ratio(7, 3, 1000, 5e-4, 5e-4), 2)   # the certificate's bisection: 80.8
    80.77
    """
    a = math.sqrt(wd_W * wd_H * n_A) / margin
    disc = 1 - 4 * K_A * K_B * a * a
    if disc <= 0:
        return 1.0
    # 1 − √disc without cancellation: (1 − disc)/(1 + √disc)
    x_minus = (4 * K_A * K_B * a * a / (1 + math.sqrt(disc))) / (2 * K_B * a)
    return max(1.0, 1 / x_minus**2)


def seli_grams(counts: Sequence[int]) -> dict[str, np.ndarray]:
    """The SELI geometry (Thrampoulidis, Kini, Vakilian & Behnia 2022): the λ → 0 limit (in direction) of
    the bias-free imbalanced CE UFM. With the simplex-encoded labels Ẑ = (I − 11ᵀ/K)Y = VΛUᵀ (K×N),
    WWᵀ ∝ VΛVᵀ = (PDP)^{1/2} and the Gram of the class features ∝ (PDP)^{+1/2} (P = I − 11ᵀ/K,
    D = diag(n_k); the features are not centered). Balanced counts give the simplex ETF for both.
    >>> from analysis.metrics import etf_distance
    >>> etf_distance(seli_grams([5, 5, 5])["W"]) < 1e-15
    True
    """
    counts = np.asarray(counts, dtype=float)
    K = len(counts)
    P = np.eye(K) - 1.0 / K
    evals, V = np.linalg.eigh(P @ np.diag(counts) @ P)
    keep = evals > 1e-12 * evals.max()
    V, lam = V[:, keep], np.sqrt(evals[keep])
    return {"W": (V * lam) @ V.T, "means": (V / lam) @ V.T}


def seli_group_grams(counts: Sequence[int]) -> dict[str, GroupMatrix]:
    """`seli_grams` in the count-group algebra (no K×K array): P = I − 11ᵀ/K and D = diag(n_k) are
    `GroupMatrix`es, so PDP = Q(P_B diag(n) P_B)Qᵀ + Σ_g n_g P_g; its square root and pseudo-inverse square root
    act on the G×G part (eigh) and on n_g. The same 1e-12 relative cut of the null space as `seli_grams`.
    >>> counts = [5, 5, 2, 9]; _, _, cg = class_groups(counts)
    >>> dense, grouped = seli_grams(counts), seli_group_grams(counts)
    >>> all(np.allclose(grouped[k].dense(cg), dense[k], atol=1e-12) for k in ("W", "means"))
    True
    """
    n, m, _ = class_groups(counts)
    K = int(m.sum())
    P = GroupMatrix.identity(m) - GroupMatrix.ones(m) * (1.0 / K)
    PDP = P @ GroupMatrix.diagonal(n, m) @ P
    evals, V = np.linalg.eigh((PDP.B + PDP.B.T) / 2)
    top = max(float(evals.max()), float(PDP.b.max()))
    keep = evals > 1e-12 * top
    V, lam = V[:, keep], np.sqrt(evals[keep])
    root = np.where(PDP.b > 1e-12 * top, np.sqrt(np.clip(PDP.b, 0, None)), 0.0)
    with np.errstate(divide="ignore"):
        inv_root = np.where(root > 0, 1 / root, 0.0)
    return {"W": GroupMatrix((V * lam) @ V.T, root, m), "means": GroupMatrix((V / lam) @ V.T, inv_root, m)}


def gram_distance_grouped(V: np.ndarray, reference: GroupMatrix, class_group: Sequence[int]) -> float:
    """`analysis.metrics.gram_distance`(V Vᵀ, R) for K×d rows V and a count-group Gram R, without a K×K array:
    ⟨VVᵀ, R⟩ = Σ_k ⟨v_k, (RV)_k⟩ with RV = Q B (QᵀV) + Σ_g b_g P_g V (group sums and deviations from the group
    means), ‖VVᵀ‖_F = ‖VᵀV‖_F (d×d); then √(2 − 2⟨VVᵀ, R⟩/(‖VVᵀ‖‖R‖)), accurate to ~1e-8 absolute (the
    subtraction; `GroupMatrix.distance` has no such loss). NaN if V = 0.
    >>> from analysis.metrics import gram_distance
    >>> V, cg = np.random.default_rng(0).normal(size=(5, 3)), [0, 0, 1, 1, 1]
    >>> R = GroupMatrix(np.array([[2.0, 1.0], [1.0, 3.0]]), np.array([0.5, 1.0]), [2, 3])
    >>> abs(gram_distance_grouped(V, R, cg) - gram_distance(V @ V.T, R.dense(cg))) < 1e-12
    True
    """
    V = np.asarray(V, dtype=float)
    cg = np.asarray(class_group, dtype=int)
    m = reference.m
    sums = np.zeros((len(m), V.shape[1]))
    np.add.at(sums, cg, V)
    QtV = sums / np.sqrt(m)[:, None]
    RV = (reference.B @ QtV)[cg] / np.sqrt(m)[cg][:, None] + reference.b[cg][:, None] * (V - (sums / m[:, None])[cg])
    inner = float((V * RV).sum())
    gram = V.T @ V if V.shape[1] <= V.shape[0] else V @ V.T
    norm = float(np.linalg.norm(gram))
    if norm == 0:
        return math.nan
    return math.sqrt(max(0.0, 2 - 2 * inner / (norm * reference.frobenius())))


def etf_grams(K: int, W_norm_sq: float, ratio_sq: float) -> dict[str, np.ndarray]:
    """Grams of a simplex-ETF classifier with ‖W‖² = W_norm_sq and class means h_k = κ·w_k, κ² = ratio_sq (K×K:
    the targets build them for K <= GRAMS_MAX_K only).
    >>> etf_grams(3, 2.0, 0.25)["means"].round(4).tolist()[0]
    [0.1667, -0.0833, -0.0833]
    """
    gram_W = W_norm_sq / (K - 1) * (np.eye(K) - 1.0 / K)
    return {"W": gram_W, "means": ratio_sq * gram_W}


def ce_etf(K: int, n: int, d: int, wd_W: float, wd_H: float, smoothing: float = 0.0) -> Target:
    """Cross-entropy (optionally label-smoothed) + weight decay, balanced: Zhu et al. (2021), Thm 3.1.

    Wrong classes get probability c' = c + α/K, c = √(nλ_Wλ_H); logit gap u* = ln(1/c' − (K − 1));
    ‖W‖² = (K−1)u*√(nλ_H/λ_W), ‖H‖² = (K−1)u*√(nλ_W/λ_H); F* = ℓ(u*) + (K−1)·c·u*, with
    ℓ(u*) = −ln(1 − (K−1)c) for plain CE. Any bias is constant across classes (b = 0 if regularized).
    """
    name = "ce_etf" if smoothing == 0 else "ls_etf"
    if d < K - 1:
        return not_applicable(name, f"needs d >= K - 1 for a simplex ETF (d={d}, K={K})")
    if wd_W <= 0 or wd_H <= 0:
        return not_applicable(name, "needs wd_W > 0 and wd_H > 0 (without weight decay the norms diverge)")
    c = math.sqrt(n * wd_W * wd_H)
    c_wrong = c + smoothing / K
    if c_wrong * K >= 1:
        p = {"loss": math.log(K), "W_norm_sq": 0.0, "H_norm_sq": 0.0, "logit_gap": 0.0}
        return Target(name, True, "collapse to zero: sqrt(n·wd_W·wd_H) >= (1 - smoothing)/K", p)
    u = math.log(1 / c_wrong - (K - 1))
    true_weight = 1 - smoothing + smoothing / K
    # log p_true = log1p(−(K−1)c'): p_true is 1 − 1e-9 at λ = 1e-10, where log(p_true) keeps 7 digits
    data_loss = -true_weight * math.log1p(-(K - 1) * c_wrong) - (K - 1) * (smoothing / K) * math.log(c_wrong)
    p = {
        "loss": data_loss + (K - 1) * c * u,
        "W_norm_sq": (K - 1) * u * math.sqrt(n * wd_H / wd_W),
        "H_norm_sq": (K - 1) * u * math.sqrt(n * wd_W / wd_H),
        "logit_gap": u,
        "nc1": 0.0, "nc2": 0.0, "nc3": 0.0, "nc4": 0.0, "accuracy": 1.0,
    }
    return Target(name, True, "", p, etf_grams(K, p["W_norm_sq"], wd_W / (n * wd_H)) if K <= GRAMS_MAX_K else {})


def deep_linear_singular_value(a: float, N: int, lam: float, factors: int) -> float:
    """argmin_{s>=0} (1/2N)(a − s)² + (m/2)·λ̄·s^{2/m} for m = `factors` >= 2 (λ̄ = `lam`): 0, or the larger root
    of s^{1−p}(a − s) = Nλ̄ (p = 2/m) where it beats 0 (the problem is not convex for m > 2)."""
    from scipy.optimize import brentq

    p = 2.0 / factors
    if factors == 2:
        return max(a - N * lam, 0.0)
    g = lambda s: s ** (1 - p) * (a - s) - N * lam  # noqa: E731  φ'(s)·N/s^{p−1}, decreasing beyond s_peak
    s_peak = (1 - p) * a / (2 - p)
    if g(s_peak) <= 0:
        return 0.0
    s = brentq(g, s_peak, a, xtol=1e-15 * a, rtol=4 * np.finfo(float).eps, maxiter=500)
    phi = lambda x: (a - x) ** 2 / (2 * N) + factors / 2 * lam * x**p  # noqa: E731
    return s if phi(s) < phi(0.0) else 0.0


def deep_linear_mse(counts: Sequence[int], d: int, width: int, depth: int, wd_W: float, wd_H: float, wd_M: float,
                    target_scale: float = 1.0) -> Target:
    """The deep linear UFM under bias-free MSE (Dang et al. 2023; Súkeník, Mondelli & Lampert 2023): logits
    Z = W M_{L−1}…M_1 H with m = L + 1 factors. min over factorizations of Σ λ_f/2‖F_f‖² with product Z is
    (m/2)·λ̄·Σ_i σ_i(Z)^{2/m}, λ̄ = (λ_H λ_M^{L−1} λ_W)^{1/m} (AM–GM over the factors' singular values), and
    the targets' singular values are s·√n_k (one per class, orthogonal): one scalar problem per class,
    min_σ (1/2N)(s√n_k − σ)² + (m/2)λ̄σ^{2/m}. Every factor then has the class's singular value
    (λ̄σ_k^{2/m}/λ_f)^{1/2}; the classes' features collapse onto orthogonal directions. Example:
    >>> t = deep_linear_mse([5] * 4, 8, 8, 1, 5e-3, 5e-3, 5e-3)   # depth 1: the one-layer closed form
    >>> round(t.predicted["loss"], 10) == round(mse_bias_free([5] * 4, 8, 5e-3, 5e-3).predicted["loss"], 10)
    True
    """
    name = "deep_linear_mse"
    counts = np.asarray(counts, dtype=float)
    K, N, m = len(counts), int(counts.sum()), depth + 1
    if min(wd_W, wd_H) <= 0 or (depth > 1 and wd_M <= 0):
        return not_applicable(name, "needs weight decay > 0 on every factor (no minimizer without it)")
    lam_bar = math.exp((math.log(wd_H) + (depth - 1) * math.log(wd_M) + math.log(wd_W)) / m) if depth > 1 \
        else math.sqrt(wd_W * wd_H)
    a = target_scale * np.sqrt(counts)
    sigma = np.array([deep_linear_singular_value(float(ak), N, lam_bar, m) for ak in a])
    rank = int((sigma > 0).sum())
    if min(d, width) < rank:
        return not_applicable(name, f"needs d and the width >= {rank}, the rank of the optimal logits")
    per_factor = lam_bar * sigma ** (2 / m)  # λ_f·(factor's singular value)² for every factor, per class
    p: dict[str, float] = {
        "loss": float(((a - sigma) ** 2).sum() / (2 * N) + m / 2 * per_factor.sum()),
        "W_norm_sq": float(per_factor.sum() / wd_W),
        "H_norm_sq": float(per_factor.sum() / wd_H),
        **{f"M{l}_norm_sq": float(per_factor.sum() / wd_M) for l in range(1, depth)},
    }
    if rank == 0:
        return Target(name, True, "collapse to zero: every class's scalar problem is solved by 0", p)
    p["z_true"] = float((counts * sigma / np.sqrt(counts)).sum() / N)
    p["z_other"] = 0.0
    p.update(nc1=0.0, nc4=0.0, accuracy=1.0 if rank == K else float(counts[sigma > 0].sum() / N))
    return Target(name, True, f"{m} factors: one scalar problem per class, σ^(2/{m}) penalty", p)


def focal_data_loss(u: float, K: int, gamma: float) -> float:
    """The focal loss −(1 − p)^γ log p of a sample whose true logit leads every other by u (the ETF's logits),
    p = 1/(1 + (K−1)e^{−u}); log p and 1 − p in forms exact for large u."""
    a = (K - 1) * math.exp(-u)
    log_p = -math.log1p(a)
    return -((a / (1 + a)) ** gamma) * log_p if gamma else -log_p


def focal_etf(K: int, n: int, d: int, wd_W: float, wd_H: float, gamma: float) -> Target:
    """Focal loss + weight decay, balanced: the global minimizers are simplex ETFs (Zhou et al. 2022, "Are all
    losses created equal: a neural collapse perspective"), so only the scale is left. With W = αM, h = βm_y
    (M a unit simplex ETF) and ρ = αβ, the logit gap is u = ρK/(K−1) and the balanced norms cost Kcρ
    (c = √(nλ_Wλ_H)): F* = min_ρ≥0 ℓ_γ(ρK/(K−1)) + Kcρ, ‖W‖² = ρ*K√(nλ_H/λ_W), ‖H‖² = ρ*K√(nλ_W/λ_H).
    The 1-D problem need not be convex for γ > 0: it is solved on a grid over [0, ℓ_γ(0)/(Kc)] (F ≥ Kcρ
    beyond) and refined around the best point. γ = 0 is `ce_etf`. Example:
    >>> t = focal_etf(4, 5, 8, 5e-3, 5e-3, 0.0); round(t.predicted["loss"], 7)   # = ce_etf: 0.1836920
    0.183692
    """
    name = "focal_etf"
    if d < K - 1:
        return not_applicable(name, f"needs d >= K - 1 for a simplex ETF (d={d}, K={K})")
    if wd_W <= 0 or wd_H <= 0:
        return not_applicable(name, "needs wd_W > 0 and wd_H > 0 (without weight decay the norms diverge)")
    from scipy.optimize import minimize_scalar

    c = math.sqrt(n * wd_W * wd_H)
    F = lambda rho: focal_data_loss(rho * K / (K - 1), K, gamma) + K * c * rho  # noqa: E731
    top = focal_data_loss(0.0, K, gamma) / (K * c)
    grid = np.linspace(0.0, top, 4001)
    values = np.array([F(r) for r in grid])
    i = int(values.argmin())
    h = grid[1] - grid[0]
    rho = 0.0
    if i > 0:
        best = minimize_scalar(F, bounds=(max(grid[i] - h, 0.0), min(grid[i] + h, top)), method="bounded",
                               options={"xatol": 1e-15 * max(1.0, top)})
        rho = float(best.x)
    if rho <= 0 or F(rho) >= F(0.0):
        p = {"loss": F(0.0), "W_norm_sq": 0.0, "H_norm_sq": 0.0, "logit_gap": 0.0}
        return Target(name, True, "collapse to zero: the weight decay outweighs any margin", p)
    u = rho * K / (K - 1)
    p = {
        "loss": F(rho),
        "W_norm_sq": rho * K * math.sqrt(n * wd_H / wd_W),
        "H_norm_sq": rho * K * math.sqrt(n * wd_W / wd_H),
        "logit_gap": u,
        "nc1": 0.0, "nc2": 0.0, "nc3": 0.0, "nc4": 0.0, "accuracy": 1.0,
    }
    return Target(name, True, f"γ = {gamma:g}: the ETF's scale from the one-dimensional problem", p,
                  etf_grams(K, p["W_norm_sq"], wd_W / (n * wd_H)) if K <= GRAMS_MAX_K else {})


def etf_exists(K: int, d: int) -> bool:
    """A simplex ETF of K vectors needs K − 1 dimensions: none exists for K > d + 1."""
    return K <= d + 1


def simplex_etf(K: int, d: int) -> Target:
    """The simplex-ETF target of the class means (and classifier): Gram ∝ (K/(K−1))(I − 11ᵀ/K)."""
    if not etf_exists(K, d):
        return not_applicable("simplex_etf", f"no simplex ETF exists for K = {K} > d + 1 = {d + 1}; the "
                                             "optimal configuration is a spherical code")
    return Target("simplex_etf", True, "", {"nc2": 0.0, "nc3": 0.0})


def mse_bias_split(K: int, n: int, wd_W: float, wd_H: float, wd_b: float,
                   target_scale: float = 1.0) -> tuple[float, float, float]:
    """(a, g, β) of the regularized-bias MSE optimum Z = a(Y − 11ᵀ/K) + g·11ᵀ, b = β1, balanced.

    With c = √(nλ_Wλ_H) and t = s/K the problem separates (DESIGN §5.2 ansatz, exact by symmetry and
    convexity): a = (s − Kc)₊, and (g, β) minimize ½(g + β − t)² + c|g| + (λ_b/2)β²:
      λ_b t/(1 + λ_b) <= c  →  g = 0, β = t/(1 + λ_b)       (W stays a simplex ETF)
      otherwise             →  g = t − c(1 + 1/λ_b), β = c/λ_b (W gains a common component)
    """
    c = math.sqrt(n * wd_W * wd_H)
    t = target_scale / K
    a = max(0.0, target_scale - K * c)
    if wd_b == 0 or wd_b * t / (1 + wd_b) <= c:
        return a, 0.0, t / (1 + wd_b)
    return a, t - c * (1 + 1 / wd_b), c / wd_b


def mse_regularized_bias(K: int, n: int, d: int, wd_W: float, wd_H: float, wd_b: float,
                         target_scale: float = 1.0) -> Target:
    """MSE + weight decay with a bias regularized by λ_b/2‖b‖², balanced classes (see `mse_bias_split`).

    F* = (K−1)/(2K)(a − s)² + c(K−1)a + K[½(g + β − t)² + c·g + (λ_b/2)β²];
    ‖Z‖_* = a(K−1)√n + g√(NK); ‖W‖² = √(λ_H/λ_W)‖Z‖_*, ‖H‖² = √(λ_W/λ_H)‖Z‖_*. Needs d ≥ K (d ≥ K − 1
    when g = 0). λ_b = 0 gives `mse_free_bias`, λ_b → ∞ gives `mse_bias_free`.
    """
    name = "mse_regularized_bias"
    if wd_W <= 0 or wd_H <= 0:
        return not_applicable(name, "needs wd_W > 0 and wd_H > 0 (no minimizer without weight decay)")
    a, g, beta = mse_bias_split(K, n, wd_W, wd_H, wd_b, target_scale)
    rank = (K - 1 if a > 0 else 0) + (1 if g > 0 else 0)
    if d < rank:
        return not_applicable(name, f"needs d >= {rank} (d={d})")
    s, t = target_scale, target_scale / K
    c = math.sqrt(n * wd_W * wd_H)
    N = K * n
    nuclear = a * (K - 1) * math.sqrt(n) + g * math.sqrt(N * K)
    loss = ((K - 1) / (2 * K) * (a - s) ** 2 + c * (K - 1) * a
            + K * (0.5 * (g + beta - t) ** 2 + c * g + 0.5 * wd_b * beta**2))
    p: dict[str, float] = {
        "loss": loss,
        "W_norm_sq": math.sqrt(wd_H / wd_W) * nuclear,
        "H_norm_sq": math.sqrt(wd_W / wd_H) * nuclear,
        "b_mean": beta,
        "z_true": a * (1 - 1 / K) + g + beta,
        "z_other": -a / K + g + beta,
        "logit_gap": a,
    }
    if a == 0:
        return Target(name, True, "the class-dependent part collapses to zero: K·sqrt(n·wd_W·wd_H) >= s", p)
    # class means ∝ rows of D^{-1/2}U S^{1/2}: a simplex ETF plus a common component when g > 0, which
    # the centering removes (NC2 = 0); W = V S^{1/2} has Gram ∝ a√n(I − 11ᵀ/K) + g√(NK)·11ᵀ/K
    if K > GRAMS_MAX_K:  # one group of K classes: a(I − 11ᵀ/K)√n + g√(NK)/K·11ᵀ has B = g√(NK), b = a√n
        gram = GroupMatrix(np.array([[g * math.sqrt(N * K)]]), np.array([a * math.sqrt(n)]), [K])
        p.update(nc1=0.0, nc2=0.0, nc3=0.0, nc4=0.0, accuracy=1.0, nc2_W=gram.etf_distance() if g > 0 else 0.0)
        return Target(name, True, f"K = {K} > {GRAMS_MAX_K}: the K×K Grams are not built", p)
    gram_W = a * math.sqrt(n) * (np.eye(K) - 1.0 / K) + g * math.sqrt(N * K) / K * np.ones((K, K))
    p.update(nc1=0.0, nc2=0.0, nc3=0.0, nc4=0.0, accuracy=1.0,
             nc2_W=etf_distance(gram_W) if g > 0 else 0.0)
    # class features: Gram √(λ_W/λ_H)/√n·(a(I − 11ᵀ/K) + g11ᵀ); centering removes the g part
    grams = {"W": math.sqrt(wd_H / wd_W) * gram_W,
             "means": math.sqrt(wd_W / wd_H) / math.sqrt(n) * a * (np.eye(K) - 1.0 / K)}
    return Target(name, True, "", p, grams)


def lemma1_square_loss(alpha: float, K: int) -> float:
    """Rangamani & Banburski, Lemma 1: an NC output α on the true class and −α/(K−1) elsewhere has
    square loss ½((1 − α)² + α²/(K−1)) >= 1/(2K) > 0 (minimum at α = (K−1)/K): it cannot interpolate."""
    return 0.5 * ((1 - alpha) ** 2 + alpha**2 / (K - 1))


def sqi_classifier_norm_sq(eps: float, K: int, wd: float) -> float:
    """Symmetric quasi-interpolation (outputs 1 − ε on the true class, ε/(K−1) elsewhere) at a
    stationary last layer with weight decay λ and square loss ½‖·‖²: ‖w_c‖² = (ε − Kε²/(K−1))/(Kλ)."""
    return (eps - K * eps**2 / (K - 1)) / (K * wd)


def sqi_classifier(eps: float, K: int, wd: float, centered_means: np.ndarray) -> np.ndarray:
    """SQI stationary classifier: w_c = ε/(λ(K−1))·(μ_c − μ_G), rows of the centered means M."""
    return eps / (wd * (K - 1)) * np.asarray(centered_means)


def stationary_norm_identity(Y: np.ndarray, F: np.ndarray, wd: float, b: np.ndarray | None = None) -> np.ndarray:
    """At any stationary last layer (square loss, weight decay λ on W): w_c = (1/(λN)) Σ_i (y_i − f_i)_c x_i,
    hence ‖w_c‖² = (1/(λN)) Σ_i (y_i − f_i)_c (f_{i,c} − b_c) for each class c (F the N×K outputs
    including the bias b; with b = 0, or an unregularized bias, the form (y − f)_c f_{i,c} of DESIGN)."""
    Y, F = np.asarray(Y, dtype=float), np.asarray(F, dtype=float)
    lin = F if b is None else F - np.asarray(b, dtype=float)
    return ((Y - F) * lin).sum(0) / (wd * Y.shape[0])
