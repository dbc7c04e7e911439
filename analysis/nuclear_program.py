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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

KINDS = ("ce", "mse")  # ce: cross-entropy against target distributions (ce, ls, soft); mse: ½‖z − t‖²
LOSSES = ("mse", "ce", "ls", "soft")


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
                 class_group: Sequence[int], device: torch.device | str | None = None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
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
        # b = beta·bias_scale, so that a step moves beta about as far as X: 1/√N matches the curvatures
        # for MSE; CE's bias is flatter (its curvature is the small probabilities'), and 4/√N measured best
        # (K = 1000, free bias: 390 iterations against 635 with 1/√N; MSE is slower with it)
        self.bias_scale = (4.0 if kind == "ce" else 1.0) / math.sqrt(self.N)

    # ----- construction -------------------------------------------------------------------------------
    @classmethod
    def from_counts(cls, counts: Sequence[float], loss: str, wd_W: float, wd_H: float, wd_b: float = 0.0,
                    bias: bool = False, *, smoothing: float = 0.0, target_scale: float = 1.0,
                    soft_targets: np.ndarray | None = None, grouped: bool = True,
                    device: torch.device | str | None = None) -> NuclearProgram:
        """The program of a UFM with these class counts, loss ("mse": ½‖z − s·e_y‖², "ce", "ls": label
        smoothing α, "soft": CE against the rows of `soft_targets`) and weight decays. `grouped=False`
        makes every class its own group (the general K×K program); soft labels always do."""
        counts = np.asarray(counts, dtype=float)
        K = len(counts)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
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
        """Project M onto the subspace that holds an optimum (and the iterates): CE-type losses ignore a
        shift of a row of logits and ‖X(I − 11ᵀ/K)‖_* <= ‖X‖_*, so X1 = 0; a free bias absorbs a shift of
        a column and ‖(I − √n√nᵀ/N)X‖_* <= ‖X‖_*, so √nᵀX = 0. Without this, the optimum lies at the end of
        valleys where only ρ‖X‖_* drives the iterates (at ρ = 1e-8, thousands of iterations)."""
        if self.kind == "ce":
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

    # ----- the smooth part ----------------------------------------------------------------------------
    def _logits(self, p: Point) -> tuple[torch.Tensor, torch.Tensor]:
        """(own, group) logits of a class-g sample: x/√n_g plus the bias of the logit's class."""
        own, group = self.entries(p.M, p.d)
        b = self._bias_vector(p)
        return own / self.sqrt_n + b, group / self.sqrt_n[:, None] + b[None, :]

    def loss_rows(self, z_own: torch.Tensor, z_group: torch.Tensor):
        """Per-row loss ℓ_g and per-entry derivatives u = ∂ℓ/∂z, evaluated to relative precision even
        where the loss is 1e-12 (CE near interpolation: lse(z) − q·z = Σ q_j(m − z_j) + log1p(s − 1),
        with s − 1 summed without the largest term)."""
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
        return Smooth(float(value), u_own, u_group, Y_M, Y_d, g_beta)

    def _column_sums(self, u_own: torch.Tensor, u_group: torch.Tensor) -> torch.Tensor:
        """v_h = Σ_k w_k u_{k,j} for a class j of group h (the same for every class of the group)."""
        return (self.omega[:, None] * self.mu / self.m[None, :] * u_group).sum(0) + self.w * u_own

    def objective(self, p: Point) -> float:
        """The primal value f(X, b) + ρ‖X‖_*: an upper bound on the optimum."""
        return self.smooth(p).value + self.rho * self.nuclear_norm(p.M, p.d)

    # ----- the dual bound -----------------------------------------------------------------------------
    def _conjugate(self, u_own: torch.Tensor, u_group: torch.Tensor) -> float:
        """f*(Y) for the dual point with per-entry values u (u_k = N y_k/√n_k), assuming Y is feasible:
        ‖Y‖₂ <= ρ, and for CE p = q + u >= 0 with rows of u summing to 0, and Σ_k w_k u_k = 0 with a free
        bias (`dual_bound` makes it so; off that set f* is +inf, which this formula does not detect)."""
        mu = self.mu
        if self.kind == "mse":
            group = mu * (0.5 * u_group**2 + u_group * self.group_target)
            rows = 0.5 * u_own**2 + u_own * self.own_target + group.sum(1)
        else:
            rows = self._plogp(u_own, self.own_target) + (mu * self._plogp(u_group, self.group_target)).sum(1)
        value = float((self.omega * rows).sum())
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
        """CE's conjugate needs p = q + u ≥ 0 (rows sum to 1 by construction)."""
        if self.kind == "mse":
            return True
        return bool((self.own_target + u_own >= 0).all() and
                    (torch.where(self.present, self.group_target + u_group, 0.0) >= 0).all())

    def _project(self, u_own: torch.Tensor, u_group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Onto the linear constraints of f*: rows of u sum to 0 (CE: Y ← Y(I − 11ᵀ/K)) and, with a free
        bias, Σ_k w_k u_k = 0 (Y ← (I − √n√nᵀ/N)Y). Both are orthogonal projections on either side of Y,
        so neither increases ‖Y‖₂."""
        if self.kind == "ce":
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
        """
        sm = self.smooth(p) if smooth is None else smooth
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
        bounds = [-self._conjugate(*scaled), -self._conjugate(*clipped)]
        return max([b for b in bounds if math.isfinite(b)], default=-math.inf)

    # ----- the full matrices --------------------------------------------------------------------------
    def dense(self, p: Point) -> tuple[np.ndarray, np.ndarray]:
        """(X, b) as full K×K and K arrays, classes in the order of the counts given."""
        own, group = (t.cpu().numpy() for t in self.entries(p.M, p.d))
        cg = self.class_group
        X = group[np.ix_(cg, cg)]
        np.fill_diagonal(X, own[cg])
        return X, self._bias_vector(p).cpu().numpy()[cg]
