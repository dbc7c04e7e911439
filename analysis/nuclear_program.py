"""The UFM's convex program in class form, its primal value and its dual lower bound (DESIGN §5.2, §5.5).

For any loss convex in the logits, the UFM's global minimum (d ≥ K) is the value of

    P = min_{X, b} f(X, b) + ρ‖X‖_*,   f(X, b) = Σ_k w_k ℓ_k(x_k/√n_k + b) + λ_b/2‖b‖²,

with ρ = √(λ_Wλ_H), w_k = n_k/N and X = D^{1/2}Ẑ the K×K matrix of per-class logits Ẑ scaled by √n_k
(the optimum has equal logits within a class, and ‖EẐ‖_* = ‖D^{1/2}Ẑ‖_*). For any Y with ‖Y‖₂ ≤ ρ,
Fenchel duality gives the lower bound  P ≥ −f*(Y), where (u_k = N·y_k/√n_k)

    f*(Y) = Σ_k w_k ℓ*_k(u_k) + [bias term],
    ℓ*(u) = Σ_j p_j log p_j, p = q + u in the simplex      (CE against a target distribution q: CE, LS, soft)
    ℓ*(u) = ½‖u‖² + ⟨u, t⟩                                  (MSE, ½‖z − t‖²)
    bias term: 0 without a bias; ‖Σ_k w_k u_k‖²/(2λ_b) with λ_b > 0; and Σ_k w_k u_k = 0 required for a
    free bias (λ_b = 0).

**Count groups.** Classes with equal counts are exchangeable under CE, LS and MSE, so (convexity and
permutation invariance) an optimum exists that is block-symmetric: within group g (m_g classes of n_g
samples) every class has one logit on itself, one on each other class of its group, and one per other
group. Such an X is Q M Qᵀ + Σ_g d_g P_g (Q: the normalized group indicators, P_g: the projector onto
the zero-sum vectors of group g), so its singular values are those of the G×G matrix M and |d_g| with
multiplicity m_g − 1:  ‖X‖_* = ‖M‖_* + Σ_g (m_g − 1)|d_g|, ‖X‖₂ = max(‖M‖₂, max_g |d_g|). The program,
its gradient, the spectral norm of Y and f*(Y) are all evaluated in this compact form, exactly: a
grouped problem costs the same at K = 10 and K = 10 000, and the bound it gives is a bound on the full
K×K program (no appeal to symmetry is needed for the lower bound). Every class its own group is the
general program; soft labels (targets that follow a tree) always use it.

**Custom losses** (`CustomLoss`): a researcher's own per-sample loss ℓ(z, y), convex in the logits, as a
torch function. A user's loss need not treat the classes alike, so the symmetry argument above does not
apply: it always gets the general K×K program (every class its own group). Its value and gradient come
from the function (gradient by autograd); its dual bound from the conjugate ℓ*(u; y) the user supplies,
f*(Y) = Σ_k w_k ℓ*(u_k; k) + [bias term] exactly as above. Without a conjugate nothing is proven: the
program has no dual bound (`has_dual` False) and `dual_bound` returns −inf.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

KINDS = ("ce", "mse")  # ce: cross-entropy against target distributions (ce, ls, soft); mse: ½‖z − t‖²
LOSSES = ("mse", "ce", "ls", "soft")
CUSTOM = "custom"  # the kind of a program built from a `CustomLoss`
# the Fenchel–Young checks of a user's conjugate (`CustomLoss`): a row fails when ℓ(z) + ℓ*(u) − ⟨u, z⟩
# is below −(FY_RTOL·(|ℓ(z)| + |ℓ*(u)| + Σ_j|u_j z_j|) + FY_ATOL·(1 + Σ_j|u_j|)) (the absolute part: a
# conjugate computes with u + e_y, whose rounding is ~1e-16 whatever the size of u); the probe at
# construction also refuses a residual that large above 0 (equality must hold at u = ∇ℓ(z))
FY_RTOL, FY_ATOL = 1e-9, 1e-13
# the rounding a user's ℓ and ℓ* are allowed: this many ulps of the scale of what they compute with (1, the
# value and the inputs), added to the primal value and subtracted from the dual bound (`rounding_allowance`)
ROUNDING_ULPS = 8


@dataclass(frozen=True)
class CustomLoss:
    """A researcher's own per-sample loss ℓ(z, y), declared convex in the logits z, for the certificate.

    - `loss(Z, y)`: logits Z (M, K) float64 and labels y (M,) int64 → the per-sample losses (M,) float64;
      differentiable by torch autograd (where ℓ is not differentiable, autograd's choice must be a
      subgradient, as it is for max, relu, abs). Row i may depend on Z[i] and y[i] only.
    - `conjugate(U, y)`: the per-sample convex conjugate ℓ*(u; y) = sup_z ⟨u, z⟩ − ℓ(z, y), row by row,
      (M,) float64, +inf outside its domain (never NaN). It is what the lower bound is made of, so it is
      trusted: the program checks it only by Fenchel–Young, ℓ(z) + ℓ*(u) ≥ ⟨u, z⟩ at every pair it
      evaluates and = at u = ∇ℓ(z) at two probe points, and refuses (ValueError) a conjugate that fails.
      None: no lower bound can be proven; the solver still runs, and its value is an upper bound on the
      optimum only, never "certified".
    - `shift_invariant`: ℓ(z + c·1, y) = ℓ(z, y) for every c (CE and its relatives). Then, as for the
      built-in CE, the iterates are restricted to X1 = 0 (‖X(I − 11ᵀ/K)‖_* ≤ ‖X‖_*, so an optimum lies
      there) and dom ℓ* ⊂ {Σ_j u_j = 0}: the conjugate is only evaluated at rows u projected onto it, so it
      may assume Σ_j u_j = 0. False (the default) is always safe: no restriction, no projection.

    The dual points are gradients after projections and scalings done in floating point: an entry that
    is 0 in exact arithmetic (a probability or a hinge multiplier at the boundary of dom ℓ*) can arrive
    as −1e-18. A conjugate that returns +inf there gives no bound from that point (the other candidate
    may still give one); one that evaluates at the nearest point of its domain when it is off by rounding
    only (say by 1e-14·max|u|) moves the bound by about as much. Precision: the values are widened by
    ROUNDING_ULPS ulps of the scale of the functions' inputs (`NuclearProgram.rounding_allowance`), which
    covers straightforward code (lse(z) − z_y for CE) but not a loss that cancels catastrophically (say
    Σ_j max(0, 1 + z_j − z_y)² − 1 for the sum over j ≠ y, 1e-8 of a loss of 1e-8 lost): write the loss
    so that it is accurate where it is small.

    Example, MSE ½‖z − e_y‖² (conjugate ½‖u‖² + u_y):
    >>> def mse(Z, y):
    ...     return 0.5 * ((Z - torch.nn.functional.one_hot(y, Z.shape[1])) ** 2).sum(1)
    >>> def mse_conjugate(U, y):
    ...     return 0.5 * (U**2).sum(1) + U.gather(1, y[:, None])[:, 0]
    >>> my_mse = CustomLoss("my-mse", mse, mse_conjugate)
    >>> prog = NuclearProgram.from_counts([5, 5, 2], my_mse, 1e-2, 1e-2)
    >>> prog.kind, prog.G, prog.has_dual      # the general K×K program
    ('custom', 3, True)
    >>> builtin = NuclearProgram.from_counts([5, 5, 2], "mse", 1e-2, 1e-2, grouped=False)
    >>> p = Point(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
    ...           torch.zeros(3, dtype=torch.float64))
    >>> abs(prog.objective(p) - builtin.objective(p)) < 1e-15   # the same f, by autograd and the user's function
    True
    >>> 0 < builtin.dual_bound(p) - prog.dual_bound(p) < 1e-13   # the same f*, less the rounding allowance
    True
    """

    name: str
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    conjugate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    shift_invariant: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a CustomLoss needs a name (a non-empty string)")
        if not callable(self.loss):
            raise ValueError(f"custom loss {self.name!r}: loss must be callable (Z, y) -> (M,) losses")
        if self.conjugate is not None and not callable(self.conjugate):
            raise ValueError(f"custom loss {self.name!r}: conjugate must be callable (U, y) -> (M,) or None")


def svd(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch's SVD (LAPACK gesdd), falling back to numpy's and then to the slower QR-iteration driver
    (gesvd) where gesdd does not converge: it fails on matrices with hundreds of equal singular values,
    which are what symmetric optima of class-imbalanced programs have (MKL then prints a DLASCL error).
    >>> [round(float(s), 12) for s in svd(torch.eye(3, dtype=torch.float64) * 2)[1]]
    [2.0, 2.0, 2.0]
    """
    try:
        return torch.linalg.svd(A, full_matrices=False)
    except torch.linalg.LinAlgError:
        if A.is_cuda:
            return torch.linalg.svd(A, full_matrices=False, driver="gesvd")
        try:  # numpy's gesdd converged on every matrix torch's failed on (measured), at the same speed
            U, S, Vh = np.linalg.svd(A.numpy(), full_matrices=False)
        except np.linalg.LinAlgError:
            import scipy.linalg  # late: the last resort, 4× slower

            U, S, Vh = scipy.linalg.svd(A.numpy(), full_matrices=False, lapack_driver="gesvd")
        return torch.from_numpy(U), torch.from_numpy(S), torch.from_numpy(Vh)


def singular_values(A: torch.Tensor) -> torch.Tensor:
    """The singular values of A, with the fallback of `svd`.
    >>> singular_values(torch.tensor([[3.0, 0.0], [0.0, -4.0]])).tolist()
    [4.0, 3.0]
    """
    try:
        return torch.linalg.svdvals(A)
    except torch.linalg.LinAlgError:
        return svd(A)[1]


def default_device(groups: int) -> torch.device:
    """CUDA for programs large enough to gain from it (a G×G SVD per step), else the CPU.
    >>> default_device(2).type
    'cpu'
    """
    return torch.device("cuda" if torch.cuda.is_available() and groups >= 256 else "cpu")


@dataclass
class Point:
    """A primal point in compact form: X = Q M Qᵀ + Σ_g d_g P_g, bias b = beta·bias_scale (per group)."""

    M: torch.Tensor  # (G, G)
    d: torch.Tensor  # (G,); 0 where m_g = 1
    beta: torch.Tensor  # (G,) the bias in scaled units

    def combine(self, other: Point, a: float, c: float) -> Point:
        """a·self + c·other."""
        return Point(a * self.M + c * other.M, a * self.d + c * other.d, a * self.beta + c * other.beta)


@dataclass
class Smooth:
    """f at a point: value, the per-entry derivative u = ∂ℓ/∂z (own entry and group entries), and the
    gradient in the program's metric (Y_M, Y_d for X; g_beta for the bias)."""

    value: float
    u_own: torch.Tensor  # (G,)
    u_group: torch.Tensor  # (G, G)
    Y_M: torch.Tensor  # ∂f/∂X in compact form: the gradient in the Frobenius metric of the full X
    Y_d: torch.Tensor
    g_beta: torch.Tensor  # the gradient in beta, in the metric Σ_h m_h beta_h² of the full bias vector
    rows: torch.Tensor | None = None  # the per-class losses ℓ_g (kept for custom losses' Fenchel–Young check)


class NuclearProgram:
    """min_{X,b} Σ_k w_k ℓ_k(x_k/√n_k + b) + ρ‖X‖_* + λ_b/2‖b‖² in compact (count-group) form.

    Build it with `NuclearProgram.from_counts`; a point is a `Point` (M, d, beta). Example:
    >>> prog = NuclearProgram.from_counts([100, 100, 10], "ce", 5e-4, 5e-4)
    >>> prog.G, prog.K        # two groups: two classes of 100, one of 10
    (2, 3)
    >>> p = Point(torch.eye(2, dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64),
    ...           torch.zeros(2, dtype=torch.float64))
    >>> X, b = prog.dense(p)  # the full K×K matrix (√n_k × the class-k logits) and bias
    >>> prog.nuclear_norm(p.M, p.d) == float(np.linalg.svd(X, compute_uv=False).sum())
    True
    >>> prog.dual_bound(p) <= prog.objective(p)   # weak duality, at any point
    True
    """

    def __init__(self, m: Sequence[int], n: Sequence[float], kind: str, own_target: np.ndarray,
                 group_target: np.ndarray, rho: float, bias: bool, wd_b: float,
                 class_group: Sequence[int], device: torch.device | str | None = None,
                 custom: CustomLoss | None = None):
        if kind not in KINDS + (CUSTOM,):
            raise ValueError(f"kind must be one of {KINDS + (CUSTOM,)}, got {kind!r}")
        if (kind == CUSTOM) != (custom is not None):
            raise ValueError(f"kind {CUSTOM!r} goes with a CustomLoss, and only it")
        if custom is not None and any(int(k) != 1 for k in m):
            raise ValueError("a custom loss takes the general program: every class its own group")
        if not rho > 0:
            raise ValueError("the nuclear-norm program needs wd_W > 0 and wd_H > 0")
        G = len(m)
        self.device = torch.device(device) if device is not None else default_device(G)
        t = lambda x: torch.as_tensor(np.asarray(x, dtype=float), dtype=torch.float64, device=self.device)  # noqa: E731
        self.kind, self.rho, self.bias, self.wd_b = kind, float(rho), bool(bias), float(wd_b)
        self.m, self.n = t(m), t(n)
        self.G, self.K = G, int(round(float(self.m.sum())))
        self.N = float((self.m * self.n).sum())
        self.w = self.n / self.N  # weight of one class
        self.omega = self.m * self.w  # weight of a group's rows
        self.sqrt_n = self.n.sqrt()
        eye = torch.eye(G, dtype=torch.float64, device=self.device)
        self.mu = self.m[None, :] - eye  # multiplicity of group entry (g, h) in a class-g row (0: absent)
        self.sqrt_mm = (self.m[:, None] * self.m[None, :]).sqrt()  # M_gh = √(m_g m_h)·(entry of block g, h)
        self.present = self.mu > 0
        self.grouped = self.m > 1  # groups with a within-group zero-sum part (d_g)
        self.own_target, self.group_target = t(own_target), t(group_target)
        self.class_group = np.asarray(class_group, dtype=int)  # (K,) the group of every class
        self.custom = custom
        # ℓ(z + c1) = ℓ(z): the iterates keep X1 = 0 and the dual rows sum to 0 (`restrict`, `_project`)
        self.shift_invariant = kind == "ce" or (custom is not None and custom.shift_invariant)
        # False: no conjugate, no lower bound (`dual_bound` is −inf; a value is an upper bound only)
        self.has_dual = custom is None or custom.conjugate is not None
        self.labels = torch.arange(G, device=self.device)  # the label of the rows of a general program
        # b = beta·bias_scale, so that a step moves beta about as far as X: 1/√N matches the curvatures
        # for MSE; CE's bias is flatter (its curvature is the small probabilities'), and 4/√N measured best
        # (K = 1000, free bias: 390 iterations against 635 with 1/√N; MSE is slower with it)
        self.bias_scale = (4.0 if kind == "ce" else 1.0) / math.sqrt(self.N)
        if custom is not None:
            self._probe_custom()

    # ----- construction -------------------------------------------------------------------------------
    @classmethod
    def from_counts(cls, counts: Sequence[float], loss: str | CustomLoss, wd_W: float, wd_H: float,
                    wd_b: float = 0.0, bias: bool = False, *, smoothing: float = 0.0, target_scale: float = 1.0,
                    soft_targets: np.ndarray | None = None, grouped: bool = True,
                    device: torch.device | str | None = None) -> NuclearProgram:
        """The program of a UFM with these class counts, loss ("mse": ½‖z − s·e_y‖², "ce", "ls": label
        smoothing α, "soft": CE against the rows of `soft_targets`, or a `CustomLoss`) and weight decays.
        `grouped=False` makes every class its own group (the general K×K program); soft labels and custom
        losses always do (class k of the general program is the k-th count, label k). Example:
        >>> sq = CustomLoss("half-square", lambda Z, y: 0.5 * (Z**2).sum(1), lambda U, y: 0.5 * (U**2).sum(1))
        >>> prog = NuclearProgram.from_counts([3, 1], sq, 0.1, 0.1)
        >>> prog.K, prog.G, prog.kind, prog.shift_invariant
        (2, 2, 'custom', False)
        """
        counts = np.asarray(counts, dtype=float)
        K = len(counts)
        if isinstance(loss, CustomLoss):
            if not (wd_W > 0 and wd_H > 0):
                raise ValueError("the nuclear-norm program needs wd_W > 0 and wd_H > 0")
            if smoothing != 0 or target_scale != 1 or soft_targets is not None:
                raise ValueError("smoothing, target_scale and soft_targets belong to the built-in losses; a "
                                 "CustomLoss carries its targets itself")
            return cls(np.ones(K, dtype=int), counts, CUSTOM, np.zeros(K), np.zeros((K, K)),
                       math.sqrt(wd_W * wd_H), bias, wd_b, np.arange(K), device, custom=loss)
        if not isinstance(loss, str) or loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES} or a CustomLoss, got {loss!r}")
        if not (wd_W > 0 and wd_H > 0):
            raise ValueError("the nuclear-norm program needs wd_W > 0 and wd_H > 0")
        if loss == "soft":
            if soft_targets is None:
                raise ValueError("loss 'soft' needs soft_targets, a (K, K) row-stochastic matrix")
            T = np.array(soft_targets, dtype=float)
            if T.shape != (K, K) or (T < 0).any() or np.abs(T.sum(1) - 1).max() > 1e-12:
                # CE against a q that is not a distribution is unbounded below (or not shift-invariant)
                raise ValueError("soft_targets must be a (K, K) matrix of rows >= 0 that sum to 1")
            grouped = False
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")
        if grouped:
            values, class_group = np.unique(counts, return_inverse=True)
        else:
            values, class_group = counts, np.arange(K)
        G = len(values)
        m = np.bincount(class_group, minlength=G)
        if loss == "soft":
            own, group = np.diag(T).copy(), T
        else:
            on, off = {"mse": (target_scale, 0.0), "ce": (1.0, 0.0),
                       "ls": (1 - smoothing + smoothing / K, smoothing / K)}[loss]
            own, group = np.full(G, on), np.full((G, G), off)
        kind = "mse" if loss == "mse" else "ce"
        return cls(m, values, kind, own, group, math.sqrt(wd_W * wd_H), bias, wd_b, class_group, device)

    # ----- the compact representation -----------------------------------------------------------------
    def entries(self, M: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(own, group) entries of X = QMQᵀ + Σ d_g P_g: X_kk and X_kj for j in group h (j ≠ k)."""
        m = self.m
        group = M / self.sqrt_mm
        own = (M.diagonal() + (m - 1) * d) / m
        group.diagonal().copy_((M.diagonal() - d) / m)
        return own, group

    def compact(self, own: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse of `entries`: (M, d) of the block-symmetric matrix with these entries."""
        m = self.m
        M = group * self.sqrt_mm
        M.diagonal().copy_(own + (m - 1) * group.diagonal())
        d = torch.where(self.grouped, own - group.diagonal(), torch.zeros_like(own))
        return M, d

    def restrict(self, M: torch.Tensor) -> torch.Tensor:
        """Project M onto the subspace that holds an optimum (and the iterates): CE-type losses (and custom
        losses declared shift-invariant) ignore a shift of a row of logits and ‖X(I − 11ᵀ/K)‖_* <= ‖X‖_*,
        so X1 = 0; a free bias absorbs a shift of a column and ‖(I − √n√nᵀ/N)X‖_* <= ‖X‖_*, so √nᵀX = 0.
        Without this, the optimum lies at the end of valleys where only ρ‖X‖_* drives the iterates (at
        ρ = 1e-8, thousands of iterations)."""
        if self.shift_invariant:
            r = (self.m / self.K).sqrt()  # 1/√K in compact form
            M = M - (M @ r)[:, None] * r[None, :]
        if self.bias and self.wd_b == 0:
            q = (self.m * self.n / self.N).sqrt()  # √n/√N in compact form
            M = M - q[:, None] * (q @ M)[None, :]
        return M

    def inner(self, a: Point, b: Point) -> float:
        """The Frobenius inner product of the full matrices (and of the full bias vectors)."""
        return float((a.M * b.M).sum() + ((self.m - 1) * a.d * b.d).sum() + (self.m * a.beta * b.beta).sum())

    def nuclear_norm(self, M: torch.Tensor, d: torch.Tensor) -> float:
        """‖X‖_* = ‖M‖_* + Σ_g (m_g − 1)|d_g|."""
        return float(singular_values(M).sum() + ((self.m - 1) * d.abs()).sum())

    def spectral_norm(self, M: torch.Tensor, d: torch.Tensor, top: float | None = None) -> float:
        """‖X‖₂ = max(‖M‖₂, max over groups of more than one class of |d_g|); `top`: ‖M‖₂ if known."""
        top = float(singular_values(M).max()) if top is None else top
        return max(top, float(d[self.grouped].abs().max())) if bool(self.grouped.any()) else top

    def _bias_vector(self, p: Point) -> torch.Tensor:
        return p.beta * self.bias_scale if self.bias else torch.zeros_like(p.beta)

    def group_bias(self, p: Point) -> np.ndarray:
        """The bias of a class of each group (G,), 0 without a bias.
        >>> prog = NuclearProgram.from_counts([4, 4, 2], "mse", 1e-2, 1e-2, bias=True)
        >>> p = Point(torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
        ...           torch.ones(2, dtype=torch.float64))
        >>> prog.group_bias(p).tolist() == [prog.bias_scale] * 2
        True
        """
        return self._bias_vector(p).cpu().numpy()

    # ----- the smooth part ----------------------------------------------------------------------------
    def _logits(self, p: Point) -> tuple[torch.Tensor, torch.Tensor]:
        """(own, group) logits of a class-g sample: x/√n_g plus the bias of the logit's class."""
        own, group = self.entries(p.M, p.d)
        b = self._bias_vector(p)
        return own / self.sqrt_n + b, group / self.sqrt_n[:, None] + b[None, :]

    def loss_rows(self, z_own: torch.Tensor, z_group: torch.Tensor):
        """Per-row loss ℓ_g and per-entry derivatives u = ∂ℓ/∂z, evaluated to relative precision even
        where the loss is 1e-12 (CE near interpolation: lse(z) − q·z = Σ q_j(m − z_j) + log1p(s − 1),
        with s − 1 summed without the largest term). A custom loss: its function and autograd."""
        if self.kind == CUSTOM:
            return self._custom_rows(z_own, z_group)
        q_own, q_group, mu = self.own_target, self.group_target, self.mu
        if self.kind == "mse":
            r_own, r_group = z_own - q_own, torch.where(self.present, z_group - q_group, 0.0)
            return 0.5 * (r_own**2 + (mu * r_group**2).sum(1)), r_own, r_group
        z = torch.cat([z_own[:, None], torch.where(self.present, z_group, -math.inf)], 1)
        q = torch.cat([q_own[:, None], torch.where(self.present, q_group, 0.0)], 1)
        mult = torch.cat([torch.ones_like(z_own)[:, None], mu], 1)
        top, j = z.max(1, keepdim=True)
        E = torch.exp(z - top)  # 0 where the entry is absent
        E_rest = E.scatter(1, j, 0.0)
        rest = (mult * E_rest).sum(1, keepdim=True) + (mult.gather(1, j) - 1)  # s − 1, s = Σ mult·E
        s = 1 + rest
        diffs = torch.where(mult > 0, top - z, 0.0)
        loss = (mult * q * diffs).sum(1) + torch.log1p(rest[:, 0])
        u = E_rest / s - q
        u = u.scatter(1, j, (1 - q.gather(1, j)) - rest / s)  # p_top − q_top without cancellation
        return loss, u[:, 0], torch.where(self.present, u[:, 1:], 0.0)

    def smooth(self, p: Point) -> Smooth:
        """f(X, b) and its gradient: Y = ∂f/∂X (entries w_k u/√n_k, in compact form) and ∂f/∂beta."""
        z_own, z_group = self._logits(p)
        rows, u_own, u_group = self.loss_rows(z_own, z_group)
        value = (self.omega * rows).sum()
        Y_M, Y_d = self._to_Y(u_own, u_group)
        g_beta = torch.zeros_like(p.beta)
        if self.bias:
            # per class of group h: ∂f/∂b_j = Σ_k w_k u_kj (+ λ_b b_h); the metric counts the m_h classes
            b = self._bias_vector(p)
            g_beta = self._column_sums(u_own, u_group)
            if self.wd_b > 0:
                value = value + 0.5 * self.wd_b * (self.m * b * b).sum()
                g_beta = g_beta + self.wd_b * b
            g_beta = g_beta * self.bias_scale
        return Smooth(float(value), u_own, u_group, Y_M, Y_d, g_beta, rows)

    def _column_sums(self, u_own: torch.Tensor, u_group: torch.Tensor) -> torch.Tensor:
        """v_h = Σ_k w_k u_{k,j} for a class j of group h (the same for every class of the group)."""
        return (self.omega[:, None] * self.mu / self.m[None, :] * u_group).sum(0) + self.w * u_own

    def objective(self, p: Point) -> float:
        """The primal value f(X, b) + ρ‖X‖_*: an upper bound on the optimum."""
        return self.smooth(p).value + self.rho * self.nuclear_norm(p.M, p.d)

    # ----- the dual bound -----------------------------------------------------------------------------
    def _conjugate(self, u_own: torch.Tensor, u_group: torch.Tensor, at: tuple | None = None) -> float:
        """f*(Y) for the dual point with per-entry values u (u_k = N y_k/√n_k), assuming Y is feasible:
        ‖Y‖₂ <= ρ, and for CE p = q + u >= 0 with rows of u summing to 0, and Σ_k w_k u_k = 0 with a free
        bias (`dual_bound` makes it so; off that set f* is +inf, which this formula does not detect).
        A custom loss: Σ_k w_k ℓ*(u_k; k) from its conjugate, +inf where that is; `at` = (Z, ℓ(Z)), the
        logits and losses of a primal point, for its Fenchel–Young check."""
        mu, slack = self.mu, 0.0
        if self.kind == CUSTOM:
            U = self._full(u_own, u_group)
            rows = self._custom_conjugate(U)
            if at is not None:
                self._check_fenchel_young(U, rows, *at)
            if not bool(torch.isfinite(rows).all()):
                return math.inf
            # ℓ*(u) − ⟨u, z⟩ + ℓ(z) = 0 at the optimum: the size of the terms is Σ_j |u_j|(1 + |z_j|)
            slack = self._allowance(rows, U, at[0] if at is not None else None)
        elif self.kind == "mse":
            group = mu * (0.5 * u_group**2 + u_group * self.group_target)
            rows = 0.5 * u_own**2 + u_own * self.own_target + group.sum(1)
        else:
            rows = self._plogp(u_own, self.own_target) + (mu * self._plogp(u_group, self.group_target)).sum(1)
        value = float((self.omega * rows).sum()) + slack
        if self.bias:
            v = self._column_sums(u_own, u_group)
            if self.wd_b > 0:
                value += float((self.m * v * v).sum()) / (2 * self.wd_b)
        return value

    @staticmethod
    def _plogp(u: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """p log p at p = q + u (0 at p = 0), with log p = log1p((q − 1) + u) near p = 1 (p − 1 ~ 1e-12)."""
        P = q + u
        logp = torch.where(P > 0.5, torch.log1p((q - 1) + u), torch.log(P.clamp_min(1e-300)))
        return torch.where(P > 0, P * logp, torch.zeros_like(P))

    def _feasible(self, u_own: torch.Tensor, u_group: torch.Tensor) -> bool:
        """CE's conjugate needs p = q + u ≥ 0 (rows sum to 1 by construction); a custom conjugate says +inf
        itself where its point is infeasible (that candidate then gives no bound)."""
        if self.kind != "ce":
            return True
        return bool((self.own_target + u_own >= 0).all() and
                    (torch.where(self.present, self.group_target + u_group, 0.0) >= 0).all())

    def _project(self, u_own: torch.Tensor, u_group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Onto the linear constraints of f*: rows of u sum to 0 (CE: Y ← Y(I − 11ᵀ/K)) and, with a free
        bias, Σ_k w_k u_k = 0 (Y ← (I − √n√nᵀ/N)Y). Both are orthogonal projections on either side of Y,
        so neither increases ‖Y‖₂. (CE: and a custom loss declared shift-invariant.)"""
        if self.shift_invariant:
            row = (u_own + (self.mu * u_group).sum(1)) / self.K
            u_own, u_group = u_own - row, u_group - row[:, None]
        if self.bias and self.wd_b == 0:
            v = self._column_sums(u_own, u_group)
            u_own, u_group = u_own - v, u_group - v[None, :]
        return u_own, torch.where(self.present, u_group, 0.0)

    def _to_Y(self, u_own, u_group):
        scale = self.w / self.sqrt_n
        return self.compact(scale * u_own, scale[:, None] * u_group)

    def _from_Y(self, Y_M, Y_d):
        own, group = self.entries(Y_M, Y_d)
        scale = self.sqrt_n / self.w
        return scale * own, torch.where(self.present, scale[:, None] * group, 0.0)

    def _scaled(self, u_own, u_group, norm: float | None = None):
        """u scaled into the spectral ball ‖Y‖₂ ≤ ρ (keeps CE's p = q + su ≥ 0 and the linear constraints);
        `norm`: ‖Y‖₂ where already known."""
        nrm = self.spectral_norm(*self._to_Y(u_own, u_group)) if norm is None else norm
        # a few ulps below ρ/‖Y‖₂: the SVD's own rounding (measured <= 1.1e-15 relative) cannot push it out
        s = min(1.0, self.rho / nrm * (1 - 4e-15)) if nrm > 0 else 1.0
        return s * u_own, s * u_group

    def _free_bias_start(self):
        """A strictly feasible CE dual point with Σ_k w_k u_k = 0: every class predicts q̄ = Σ_k w_k q_k."""
        q_bar = self._column_sums(self.own_target, torch.where(self.present, self.group_target, 0.0))
        return q_bar - self.own_target, torch.where(self.present, q_bar[None, :] - self.group_target, 0.0)

    def _mix(self, bad, good):
        """The point on the segment from `good` (feasible) to `bad` closest to `bad` that keeps p ≥ 0."""
        theta = 0.0
        for ub, ug, q in ((bad[0], good[0], self.own_target), (bad[1], good[1], self.group_target)):
            P, P0 = q + ub, q + ug
            neg = (P < 0) & (self.present if ub.dim() == 2 else True)
            if bool(neg.any()):
                theta = max(theta, float((-P[neg] / (P0[neg] - P[neg])).max()))
        theta = min(1.0, theta * (1 + 1e-12) + 1e-300)
        return (1 - theta) * bad[0] + theta * good[0], (1 - theta) * bad[1] + theta * good[1]

    def dual_bound(self, p: Point, smooth: Smooth | None = None) -> float:
        """A lower bound −f*(Y) on the optimum, from the gradient Y = ∇f at `p` made dual feasible.

        Two candidates, the larger is returned: (a) Y scaled into the spectral ball ‖Y‖₂ ≤ ρ (always
        feasible; with a free bias first projected onto Σ_k w_k u_k = 0 and, if some p < 0, mixed with a
        strictly feasible point); (b) that Y with its singular values clipped at ρ (sharper near the
        optimum), mixed with (a) where some p < 0. Both are exact lower bounds whatever `p` is, up to rounding —
        and one rounding needs care: with a free bias the constraint Σ_k w_k u_k = 0 holds only to
        ~1e-16 of what the projection removed, and that residual enters the bound multiplied by the
        optimal bias. Far from the optimal bias the projection removes most of u (cancellation: measured
        1e-10 relative too high at λ = 1e-8); there the point gives no bound (−inf): near the optimum
        ∂f/∂b → 0 and the projection removes almost nothing.

        A custom loss: the same candidates, its conjugate evaluated at them (a candidate where it is +inf
        gives no bound), each checked against the point's logits by Fenchel–Young (ValueError if it fails);
        without a conjugate, −inf: nothing is proven.
        """
        if not self.has_dual:
            return -math.inf
        sm = self.smooth(p) if smooth is None else smooth
        at = None
        if self.kind == CUSTOM:
            z_own, z_group = self._logits(p)
            rows = sm.rows if sm.rows is not None else self._custom_rows(z_own, z_group)[0]
            at = (self._full(z_own, z_group), rows)
        u = self._project(sm.u_own, sm.u_group)
        if self.bias and self.wd_b == 0:
            removed = float(self._column_sums(sm.u_own, sm.u_group).abs().max())
            if removed > float(torch.maximum(u[0].abs().max(), u[1].abs().max())):
                return -math.inf
        if not self._feasible(*u):
            u = self._mix(u, self._free_bias_start())
        # one SVD of Y serves both candidates: its norm scales (a), its clipped singular values give (b)
        Y_M, Y_d = self._to_Y(*u)
        U, S, Vh = svd(Y_M)
        scaled = self._scaled(*u, norm=self.spectral_norm(Y_M, Y_d, top=float(S.max())))
        # clipping keeps the null spaces of Y (1 on the right, √n on the left), hence the linear
        # constraints; `project` only removes the reconstruction's rounding
        clipped = self._project(*self._from_Y((U * S.clamp(max=self.rho)) @ Vh, Y_d.clamp(-self.rho, self.rho)))
        if not self._feasible(*clipped):
            clipped = self._mix(clipped, scaled)
        clipped = self._scaled(*clipped)  # ‖Y‖₂ ≤ ρ up to the reconstruction's rounding: make it exact
        bounds = [-self._conjugate(*scaled, at=at), -self._conjugate(*clipped, at=at)]
        return max([b for b in bounds if math.isfinite(b)], default=-math.inf)

    # ----- custom losses (the general program: group g is class g, label g) ---------------------------
    def _full(self, own: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """The K×K matrix with `own` on the diagonal and `group` off it (row k: a class-k sample)."""
        return torch.where(self.present, group, 0.0) + torch.diag(own)

    def _call(self, fn, A: torch.Tensor, what: str, labels: torch.Tensor | None = None) -> torch.Tensor:
        """fn(A, labels), checked: a float64 tensor with one value per row of A."""
        name = self.custom.name
        labels = self.labels if labels is None else labels
        try:
            out = fn(A, labels)
        except Exception as e:  # re-raised as a ValueError that states the contract
            raise ValueError(f"custom loss {name!r}: {what}(Z, y) failed on logits of shape {tuple(A.shape)} "
                             f"(float64) and labels of shape {tuple(labels.shape)} (int64): "
                             f"{type(e).__name__}: {e}") from e
        if not isinstance(out, torch.Tensor) or out.shape != (A.shape[0],) or out.dtype != torch.float64:
            got = (f"{out.dtype} of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor)
                   else type(out).__name__)
            raise ValueError(f"custom loss {name!r}: {what} must return a float64 tensor of shape (M,) = "
                             f"({A.shape[0]},), one value per row of its (M, K) input; got {got}")
        return out

    def _custom_rows(self, z_own: torch.Tensor, z_group: torch.Tensor):
        """ℓ(z_k, k) for every class k and u_k = ∇ℓ (autograd), as (rows, u_own, u_group)."""
        Z = self._full(z_own, z_group).detach().requires_grad_(True)
        with torch.enable_grad():
            rows = self._call(self.custom.loss, Z, "loss")
            grad = torch.autograd.grad(rows.sum(), Z, allow_unused=True)[0] if rows.requires_grad else None
        grad = torch.zeros_like(Z) if grad is None else grad.detach()
        return rows.detach(), grad.diagonal().clone(), torch.where(self.present, grad, 0.0)

    def _custom_conjugate(self, U: torch.Tensor) -> torch.Tensor:
        """ℓ*(u_k; k) for the rows of U (+inf where the conjugate says so); NaN is refused."""
        with torch.no_grad():
            rows = self._call(self.custom.conjugate, U, "conjugate")
        if bool(rows.isnan().any()):
            raise ValueError(f"custom loss {self.custom.name!r}: conjugate returned NaN; it must return +inf "
                             "outside its domain (a 0·log 0, say, must be written as 0)")
        return rows

    def _allowance(self, rows: torch.Tensor, A: torch.Tensor, B: torch.Tensor | None = None) -> float:
        """ROUNDING_ULPS·ε·Σ_k w_k (1 + |rows_k| + Σ_j |A_kj|(1 + |B_kj|)): the rounding a user's function
        may make computing `rows` from A (B: the logits that weigh the conjugate's inputs)."""
        size = A.abs() if B is None else A.abs() * (1 + B.abs())
        terms = 1 + rows.abs() + size.sum(1)
        return ROUNDING_ULPS * torch.finfo(torch.float64).eps * float((self.omega * terms).sum())

    def rounding_allowance(self, p: Point, smooth: Smooth | None = None) -> float:
        """How far the computed f(X, b) may lie below the true one by the rounding of the user's loss (0 for
        the built-in losses, which are evaluated to relative precision): ROUNDING_ULPS ulps of
        Σ_k w_k (1 + |ℓ_k| + ‖z_k‖_1). A loss computed as lse(z) − z_y errs by ~ε·|z_y| whatever ℓ is, which
        near interpolation (ℓ ~ 1e-8 at λ ~ 1e-8) is 1e-7 of the value: no certificate claims more. The
        dual bound of a custom loss is lowered the same way (ℓ* with Σ_j |u_j|(1 + |z_j|) for ‖z‖_1).
        >>> prog = NuclearProgram.from_counts([2, 2], CustomLoss("sq", lambda Z, y: 0.5 * (Z**2).sum(1)), 1.0, 1.0)
        >>> zero = Point(torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
        ...              torch.zeros(2, dtype=torch.float64))
        >>> prog.rounding_allowance(zero) == ROUNDING_ULPS * 2.0**-52   # ℓ = 0 at z = 0: the 1 alone
        True
        """
        if self.kind != CUSTOM:
            return 0.0
        sm = self.smooth(p) if smooth is None else smooth
        return self._allowance(sm.rows, self._full(*self._logits(p)))

    def _fenchel_young(self, U: torch.Tensor, conj: torch.Tensor, Z: torch.Tensor, rows: torch.Tensor):
        """(ℓ(z) + ℓ*(u) − ⟨u, z⟩ per row, and its rounding tolerance): ≥ 0 always, = 0 at u = ∇ℓ(z)."""
        inner = U * Z
        residual = rows + conj - inner.sum(1)
        scale = rows.abs() + conj.abs() + inner.abs().sum(1)
        return residual, FY_RTOL * scale + FY_ATOL * (1 + U.abs().sum(1))

    def _check_fenchel_young(self, U: torch.Tensor, conj: torch.Tensor, Z: torch.Tensor, rows: torch.Tensor):
        """Refuse a conjugate below the loss's: ℓ*(u) < ⟨u, z⟩ − ℓ(z) would make any bound from it false."""
        residual, tol = self._fenchel_young(U, conj, Z, rows)
        bad = (conj == -math.inf) | (torch.isfinite(conj) & (residual < -tol))
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            raise ValueError(f"custom loss {self.custom.name!r}: its conjugate violates Fenchel–Young, "
                             f"ℓ(z) + ℓ*(u) − ⟨u, z⟩ = {float(residual[k]):.3e} < 0 for label {k}: it is not "
                             "the convex conjugate of the loss (or the loss is not convex), and a lower bound "
                             "from it would be false")

    def _probe_custom(self):
        """Check the custom loss at two fixed random logit matrices: shapes and dtypes, one value per sample
        (the rows, shuffled into a batch of 2K with other rows, keep their values: a loss per class or
        one that uses the batch fails), finite values and gradients, the declared shift invariance, and
        Fenchel–Young equality ℓ*(∇ℓ(z)) = ⟨∇ℓ(z), z⟩ − ℓ(z) (a wrong conjugate, or a gradient autograd
        gets wrong, fails it). A loss declared convex that is not (ℓ below its tangent between the two probe
        points: `_check_convex`) is refused too: its program has no optimum to certify."""
        name, K = self.custom.name, self.K
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(2 * K, generator=g).to(self.device)
        batch = torch.cat([self.labels, self.labels])[order]
        mine = order.argsort()[:K]  # where the rows under test went

        def per_sample(fn, A: torch.Tensor, rows: torch.Tensor, what: str):
            with torch.no_grad():
                again = self._call(fn, torch.cat([A, 0.5 * A.flip(0) + 1])[order], what, batch)[mine]
            close = (again == rows) | ((again - rows).abs() <= FY_RTOL * (1 + rows.abs()))
            if not bool(close.all()):
                raise ValueError(f"custom loss {name!r}: {what} is not per sample: row i must depend on row i "
                                 "of its input and on y[i] only (the same rows in another batch gave other values)")

        probes = []
        for scale in (0.5, 3.0):
            Z = (scale * torch.randn(K, K, generator=g, dtype=torch.float64)).to(self.device)
            rows, u_own, u_group = self._custom_rows(Z.diagonal(), Z)
            per_sample(self.custom.loss, Z, rows, "loss")
            U = self._full(u_own, u_group)
            if not bool(torch.isfinite(rows).all() and torch.isfinite(U).all()):
                raise ValueError(f"custom loss {name!r}: loss or its autograd gradient is not finite at "
                                 f"logits of size ~{scale}; the program needs a loss finite everywhere")
            probes.append((Z, rows, U))
            if len(probes) == 2:
                self._check_convex(*probes)
            if self.custom.shift_invariant:
                shifted = self._call(self.custom.loss, Z + 1.7, "loss").detach()
                if bool(((shifted - rows).abs() > FY_RTOL * (1 + rows.abs())).any()):
                    raise ValueError(f"custom loss {name!r} is declared shift_invariant, but ℓ(z + 1.7·1) ≠ ℓ(z)")
                U = U - U.mean(1, keepdim=True)
            if self.custom.conjugate is None:
                continue
            conj = self._custom_conjugate(U)
            per_sample(self.custom.conjugate, U, conj, "conjugate")
            residual, tol = self._fenchel_young(U, conj, Z, rows)
            if not bool((residual.abs() <= tol).all()):
                k = int((~(residual.abs() <= tol)).nonzero()[0, 0])
                raise ValueError(f"custom loss {name!r}: conjugate(∇ℓ(z), y) must equal ⟨∇ℓ(z), z⟩ − ℓ(z) "
                                 f"(Fenchel–Young equality), but ℓ(z) + ℓ*(u) − ⟨u, z⟩ = {float(residual[k]):.3e}"
                                 f" for label {k} at a probe point: the conjugate is not that of the loss")

    def _check_convex(self, a: tuple, b: tuple) -> None:
        """Refuse a loss that lies below its tangent: a convex ℓ has ℓ(z') ≥ ℓ(z) + ⟨∇ℓ(z), z' − z⟩ for every
        z, z' (with autograd's subgradient where ℓ has a kink), checked both ways between two probe points
        (Z, ℓ rows, ∇ℓ rows), row by row, within the Fenchel–Young tolerances. A concave loss fails it; its
        program is unbounded below or stalls at a stationary point, and no certificate of it means anything."""
        for (Z0, rows0, U0), (Z1, rows1, _) in ((a, b), (b, a)):
            step = U0 * (Z1 - Z0)
            excess = rows1 - rows0 - step.sum(1)
            tol = FY_RTOL * (rows0.abs() + rows1.abs() + step.abs().sum(1)) + FY_ATOL * (1 + U0.abs().sum(1))
            if bool((excess < -tol).any()):
                k = int((excess < -tol).nonzero()[0, 0])
                raise ValueError(f"custom loss {self.custom.name!r} is not convex in the logits: "
                                 f"ℓ(z') − ℓ(z) − ⟨∇ℓ(z), z' − z⟩ = {float(excess[k]):.3e} < 0 for label {k} "
                                 "between two probe points (a convex loss lies above its tangents), so the "
                                 "convex program does not describe it and no certificate can be formed")

    # ----- the full matrices --------------------------------------------------------------------------
    def dense(self, p: Point) -> tuple[np.ndarray, np.ndarray]:
        """(X, b) as full K×K and K arrays, classes in the order of the counts given (K×K: for small K; the
        count-group form of X is `analysis.theory.GroupMatrix`(p.M, p.d, m), which `analysis.certificate.factorize`
        reads at any K)."""
        own, group = (t.cpu().numpy() for t in self.entries(p.M, p.d))
        cg = self.class_group
        X = group[np.ix_(cg, cg)]
        np.fill_diagonal(X, own[cg])
        return X, self._bias_vector(p).cpu().numpy()[cg]
