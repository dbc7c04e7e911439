"""A fixed classifier (HAFrame's frame, HUG's fixed proxies) makes most of H's coordinates idle: the loss sees h_i
only through Wh_i and ‖h_i‖, so the gradient of row i lies in span(rows of W) + span(h_i). Write
h_i = a_i Q + ρ_i u_i (Q: an orthonormal basis of W's row space, r × d; u_i: the unit direction of h_i's part
orthogonal to it, fixed by the start); every GD or heavy-ball step keeps that form, moving only the r + 1
numbers (a_i, ρ_i): the map (a_i, ρ_i) → h_i is an isometry, and these steps are linear in the gradient.

FixedFrame steps h̃_i = (a_i, ρ_i) ∈ R^{r+1} with the classifier W̃ = (W Qᵀ, 0) by autograd (heavy-ball SGD, HUG):
the same objective values and the same iterates mapped back, at the cost of a (K + 1)-dimensional problem instead
of a d-dimensional one (d = 512, K = 100 for CIFAR-100's HAFrame). LogitGD goes further for HAFrame under
full-batch GD: it steps the logits z_i = W h_i themselves, z ← (1 − lr·k_i) z − lr·G S with S = W Wᵀ, one
N×K×K product per step, and ‖a_i‖² by its exact recurrence. Adam and torch's L-BFGS are not rotation-equivariant
(coordinate-wise scalings, an L1 norm): they step in the full space."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.blocked import block_rows, memory_budget, row_blocks
from ufm.config import SimConfig
from ufm.fit.fused_gd import true_class_ce
from ufm.fit.measure import ObjectiveValues
from ufm.fit.steppers import Autograd
from ufm.problem import Problem

# torch's L-BFGS scales its first step by 1/‖g‖₁ and stops on max|g_i|: coordinate-wise, like Adam
REDUCIBLE_OPTIMIZERS = ("gd", "sgd")
# LogitGD recomputes ‖a_i‖² from the logits this often: its recurrence is exact, but float32 rounding would
# otherwise random-walk over thousands of steps (the iterate itself is re-read from Z, which does not drift)
RESYNC_EVERY = 100
# LogitGD reads a coordinate off the logits only along W's singular directions with s_j >= WEAK·s_1 (rounding in Z
# is amplified by s_1/s_j there); weaker ones are stepped on their own
WEAK = 0.05
# block-of-rows × K temporaries of a LogitGD step alive at once: the softmax/G, G S, a scratch buffer, the targets
LOGIT_COPIES = 4


def reducible(cfg: SimConfig) -> bool:
    """A one-layer run with a fixed classifier under GD or heavy-ball SGD, with room to gain (d > K + 1)."""
    return (cfg.fixed_classifier and cfg.loss.name in ("haframe", "hug") and cfg.depth == 1
            and cfg.features == "free" and cfg.normalize == "none" and cfg.optimizer in REDUCIBLE_OPTIMIZERS
            and cfg.d > cfg.K + 1)


def logit_steppable(cfg: SimConfig) -> bool:
    """HAFrame under full-batch GD: LogitGD's closed-form step applies."""
    return (reducible(cfg) and cfg.loss.name == "haframe" and cfg.optimizer == "gd"
            and (cfg.batch_size is None or cfg.batch_size >= cfg.N))


def logits_fit(cfg: SimConfig, device: torch.device | str | None = None) -> bool:
    """Whether LogitGD's state, the N × K logits, fits the memory budget (analysis.blocked; its other N × K-shaped
    arrays exist one block of rows at a time). Beyond it the run steps with FixedFrame, whose loss is blocked.
    >>> logits_fit(SimConfig.from_dict({"K": 100, "n": 100, "d": 512, "loss": "haframe", "hierarchy": "cifar100"}))
    True
    """
    itemsize = 8 if cfg.dtype == "float64" else 4
    return cfg.N * cfg.K * itemsize <= memory_budget(device)


def fixed_frame_stepper(problem: Problem, params: dict[str, torch.Tensor], y: torch.Tensor):
    """The fastest exact stepper for a reducible run: LogitGD for HAFrame under full-batch GD when its N × K logits fit
    the memory budget, else FixedFrame."""
    steppable = logit_steppable(problem.cfg) and logits_fit(problem.cfg, y.device)
    return (LogitGD if steppable else FixedFrame)(problem, params, y)


def split_features(W: torch.Tensor, H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                torch.Tensor]:
    """H = aQ + ρU: Q (r × d) an orthonormal basis of W's rows (r = rank W), a = HQᵀ (N × r), ρ (N × 1) the norms
    of the rest and U (N × d) its unit rows.
    >>> W, H = torch.eye(2, 3, dtype=torch.float64), torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    >>> Q, a, rho, U = split_features(W, H); a.abs().tolist(), rho.item(), float((a @ Q + rho * U - H).abs().max())
    ([[1.0, 2.0]], 3.0, 0.0)
    """
    _, sv, Vh = torch.linalg.svd(W, full_matrices=False)
    Q = Vh[: int((sv > sv[0] * 1e-12).sum())]
    a = H @ Q.T
    rest = H - a @ Q
    rho = rest.norm(dim=1, keepdim=True)
    return Q, a, rho, rest / rho.clamp_min(torch.finfo(H.dtype).tiny)


def rowdot(A: torch.Tensor, B: torch.Tensor, buffer: torch.Tensor | None = None) -> torch.Tensor:
    """⟨A_i, B_i⟩ for every row, as a column (N × 1); the elementwise product goes to `buffer` when given (no
    allocation per call).
    >>> rowdot(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 1.0], [0.0, 2.0]])).tolist()
    [[3.0], [8.0]]
    """
    if buffer is None:
        return torch.linalg.vecdot(A, B).unsqueeze(1)
    return torch.mul(A, B, out=buffer).sum(1, keepdim=True)


@dataclass
class BlockGram:
    """S = δ·I + B C Bᵀ: B (K × m) the 0/1 membership of the classes in the tree's smallest clusters (the balls of
    the smallest off-diagonal LCA distance), C (m × m). A Gram that is a function of the LCA distance (HAFrame's)
    has this form, and G S costs N·K·m·2 + N·m² instead of N·K²: m = 20 for CIFAR-100's 100 classes."""

    delta: float
    B: torch.Tensor  # (K, m)
    BT: torch.Tensor  # (m, K), contiguous
    C: torch.Tensor  # (m, m)

    def times(self, G: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """G S into `out`."""
        return torch.addmm(G, (G @ self.B) @ self.C, self.BT, beta=self.delta, out=out)


def block_gram(S: torch.Tensor, lca: torch.Tensor) -> BlockGram | None:
    """S's block form (BlockGram) in S's dtype from the tree's LCA distances, or None where it gains nothing (K < 8,
    m > K/4) or where S is not that function of the tree (checked in float64 to 1e-12).
    >>> cluster = torch.arange(8) // 4  # two clusters of four classes: LCA distance 1 inside, 2 across
    >>> lca = torch.where(cluster[:, None] == cluster[None, :], 1, 2).fill_diagonal_(0)
    >>> S = torch.tensor([1.0, 0.5, -0.1], dtype=torch.float64)[lca]
    >>> g = block_gram(S, lca); g.delta, g.C.tolist()
    (0.5, [[0.5, -0.1], [-0.1, 0.5]])
    >>> G = torch.randn(3, 8, dtype=torch.float64); float((g.times(G, torch.empty_like(G)) - G @ S).abs().max()) < 1e-14
    True
    """
    K, cast = len(S), dict(dtype=S.dtype, device=S.device)
    D, S = lca.to(device="cpu", dtype=torch.int64), S.to(device="cpu")  # a K × K setup: on the CPU, whatever S's device
    off = D[~torch.eye(K, dtype=torch.bool)]
    if K < 8 or not len(off):
        return None
    near = D <= int(off.min())  # an equivalence for an ultrametric (the LCA distance of a tree)
    labels = torch.unique(near.to(torch.int64).argmax(1), return_inverse=True)[1]
    m = int(labels.max()) + 1
    if m > K // 4:
        return None
    S64 = S.to(torch.float64)
    B = torch.nn.functional.one_hot(labels, m).to(torch.float64)
    pair = (near & ~torch.eye(K, dtype=torch.bool)).nonzero()
    delta = float(S64[pair[0, 0], pair[0, 0]] - S64[pair[0, 0], pair[0, 1]])
    sizes = B.sum(0)
    C = B.T @ (S64 - delta * torch.eye(K, dtype=torch.float64)) @ B / torch.outer(sizes, sizes)
    error = float((delta * torch.eye(K, dtype=torch.float64) + B @ C @ B.T - S64).abs().max())
    if error > 1e-12 * float(S64.abs().max()):
        return None
    return BlockGram(delta, B.to(**cast), B.T.contiguous().to(**cast), C.to(**cast))


class FixedFrame:
    """The Autograd stepper on the reduced coordinates h̃ = (a, ρ) (module docstring); `params(0)` maps them back to
    H = aQ + ρu. Example (equal to the full-space step, up to rounding):
    >>> from ufm.config import SimConfig; from ufm.problem import resolve; from ufm.model import init_params
    >>> cfg = dict(K=4, n=3, d=16, loss="haframe", hierarchy="balanced:2,2", dtype="float64")
    >>> p = resolve(SimConfig.from_dict(cfg))
    >>> full = init_params(p, torch.device("cpu"), torch.float64); y = p.labels()
    >>> reduced = FixedFrame(p, {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in full.items()}, y)
    >>> ref = Autograd(p, full, y); _ = [(ref.step(), reduced.step()) for _ in range(5)]
    >>> float((reduced.params(0)["H"] - ref.params(0)["H"]).detach().abs().max()) < 1e-12
    True
    """

    def __init__(self, problem: Problem, params: dict[str, torch.Tensor], y: torch.Tensor):
        W = params["W"].detach()
        self.Q, a, rho, self.U = split_features(W, params["H"].detach())
        self.W = params["W"]
        W_reduced = torch.cat([W @ self.Q.T, torch.zeros(len(W), 1, dtype=W.dtype, device=W.device)], dim=1)
        self.reduced = {"H": torch.cat([a, rho], dim=1).requires_grad_(True), "W": W_reduced}
        self.inner = Autograd(problem, self.reduced, y)

    def step(self) -> torch.Tensor:
        return self.inner.step()

    def stalled(self) -> bool:
        return self.inner.stalled()

    def sync(self) -> None:
        pass

    def params(self, i: int) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            h = self.reduced["H"]
            H = h[:, :-1] @ self.Q + h[:, -1:] * self.U
        return {"H": H.requires_grad_(True), "W": self.W}


class LogitGD:
    """Full-batch GD on HAFrame's F = (1 − α)·CE(Z) + α·mean_i Σ_k (z_ik/n_i − S_{k,y_i})² + λ_H/2·Σ_i n_i²
    (Liang & Davis 2023; Z = HWᵀ, n_i = ‖h_i‖, W fixed) stepped on the logits. With g_i the rows of G = ∂F/∂Z and
    γ_i = ∂F/∂n_i, the step h_i ← c_i h_i − lr·Wᵀg_i has c_i = 1 − lr(λ_H + γ_i/n_i), so
        z_i ← c_i z_i − lr·S g_i  (S = WWᵀ),    ρ_i ← c_i ρ_i,
        ‖a_i‖² ← c_i²‖a_i‖² − 2 c_i lr⟨z_i, g_i⟩ + lr²⟨S g_i, g_i⟩     (⟨a_i, Mᵀg_i⟩ = ⟨z_i, g_i⟩, M = WQᵀ),
    and n_i² = ‖a_i‖² + ρ_i². `params(0)` maps back to H = aQ + ρU (module docstring). Every row moves on its own,
    so the step runs over blocks of rows (`rows` per block, default: the memory budget's): the logits Z are the
    state, and the softmax, G, G S and the targets S_{y_i} exist one block at a time.
    Example (equal to the full-space step, up to rounding):
    >>> from ufm.config import SimConfig; from ufm.problem import resolve; from ufm.model import init_params
    >>> cfg = dict(K=4, n=3, d=16, loss="haframe", hierarchy="balanced:2,2", dtype="float64")
    >>> p = resolve(SimConfig.from_dict(cfg))
    >>> full = init_params(p, torch.device("cpu"), torch.float64); y = p.labels()
    >>> fast = LogitGD(p, {k: v.detach().clone() for k, v in full.items()}, y, rows=5)
    >>> ref = Autograd(p, full, y); _ = [(ref.step(), fast.step()) for _ in range(5)]
    >>> float((fast.params(0)["H"] - ref.params(0)["H"]).detach().abs().max()) < 1e-12
    True
    """

    def __init__(self, problem: Problem, params: dict[str, torch.Tensor], y: torch.Tensor, rows: int | None = None):
        W = params["W"].detach()
        self.W, self.y, cfg, opts = params["W"], y, problem.cfg, problem.options
        Q, a, self.rho, self.U = split_features(W, params["H"].detach())
        # the basis Q along W's right singular vectors, so that M = WQᵀ = U_M·diag(s): the logits give back
        # a_j = ⟨z, U_M[:, j]⟩/s_j, well-conditioned for the strong directions; the weak ones (s_j < WEAK·s_1, e.g.
        # a frame's numerically null direction, s_j ~ 1e-8) are stepped directly: a_j ← c a_j − lr·s_j⟨U_M[:, j], g⟩
        U_M, s, Vh_M = torch.linalg.svd(W @ Q.T, full_matrices=False)
        self.Q, a, strong = Vh_M @ Q, a @ Vh_M.T, int((s >= WEAK * s[0]).sum())
        self.M = U_M * s
        self.read = U_M[:, :strong] / s[:strong]  # (K, r_strong): a_strong = Z·read
        self.weak_map, self.a_weak = self.M[:, strong:], a[:, strong:].clone()
        self.S = W @ W.T
        # S = WWᵀ is HAFrame's Gram, a function of the LCA distance: its block form makes G S 2.5× cheaper (K = 100)
        self.frame = opts.hierarchy.frame_gram.to(device=W.device)  # float64
        self.frame_run = self.frame.to(W.dtype)  # row y: the targets S_{k,y} of a class-y sample
        self.blocks = block_gram(self.frame_run, torch.tensor(problem.tree.lca_heights))
        self.s_sq = self.frame_run.square().sum(1)[y][:, None]  # ‖s_i‖², s_i = S_{y_i}
        self.alpha, self.lr, self.wd, self.N = opts.cosine_weight, cfg.lr, cfg.wd_H, len(y)
        self.Z = a @ self.M.T
        self.a_sq = a.square().sum(1, keepdim=True)
        K = W.shape[0]
        if rows is None:
            rows = block_rows(K, itemsize=W.element_size(), copies=LOGIT_COPIES, device=W.device)
        self.row_blocks = list(row_blocks(len(y), rows))
        n = min(rows, len(y))
        self.P, self.GS, self.T = (torch.empty(n, K, dtype=W.dtype, device=W.device) for _ in range(3))
        self.arange = torch.arange(n, device=y.device)
        self.count = 0

    def _terms(self, Z: torch.Tensor, n_sq: torch.Tensor, y: torch.Tensor, S_y: torch.Tensor, s_sq: torch.Tensor,
               out: torch.Tensor | None = None, tmp: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, torch.Tensor]:
        """(F's share, the data loss's share, G/u, u, k = λ_H + γ/n) of the rows with logits Z, squared norms n² and
        labels y: G = ∂F/∂Z is returned as a multiple of the scalar u = (1 − α)/N (built in `out`; `tmp`: a scratch
        buffer of Z's shape), which saves a pass of scaling over the block. The cosine residuals R = Z/n − S_y enter
        only through ‖R_i‖² = ‖z_i‖²/n_i² − 2⟨z_i, s_i⟩/n_i + ‖s_i‖² and ⟨R_i, z_i⟩ = ‖z_i‖²/n_i − ⟨z_i, s_i⟩
        (s_i = S_{y_i}), G = ((1 − α)(softmax Z − Y) + 2α(Z/n² − S_y/n))/N and γ_i = −(2α/N)·⟨R_i, z_i⟩/n_i²: R itself
        is never formed, and the softmax is torch's fused row kernel (fewer passes: the step is memory-bound)."""
        al, N = self.alpha, self.N
        rows = self.arange[: len(y)] if len(y) <= len(self.arange) else torch.arange(len(y), device=y.device)
        inv_n = n_sq.rsqrt()
        P = torch.softmax(Z, 1, out=out)
        p_y = P[rows, y]
        # CE_i = −log p_{i,y_i}, a p_y that underflowed (a logit gap beyond ~87 in float32) recomputed exactly
        ce_rows = true_class_ce(Z, p_y, Z[rows, y])
        zz, zs = rowdot(Z, Z, tmp), rowdot(Z, S_y, tmp)
        cos_sq = (zz / n_sq - 2 * zs * inv_n + s_sq).sum()
        data = ((1 - al) * ce_rows.sum() + al * cos_sq) / N
        # G/u = softmax Z − Y + (2α/(1 − α))(Z/n² − S_y/n), u = (1 − α)/N (the config keeps α < 1)
        u, ratio, G = (1 - al) / N, 2 * al / (1 - al), P
        G[rows, y] -= 1
        G.addcmul_(Z, ratio / n_sq).addcmul_(S_y, -ratio * inv_n)
        k = self.wd - (2 * al / N) * (zz * inv_n - zs) * inv_n.pow(3)
        return data + 0.5 * self.wd * n_sq.sum(), data, G, u, k

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """One GD step (class docstring); returns F before it."""
        self.count += 1
        if self.count % RESYNC_EVERY == 0:
            self._resync()
        lr, F = self.lr, None
        for rows in self.row_blocks:
            r = rows.stop - rows.start
            Z, y, a_sq, rho = self.Z[rows], self.y[rows], self.a_sq[rows], self.rho[rows]
            n_sq = a_sq + rho.square()
            part, _, G, u, k = self._terms(Z, n_sq, y, self.frame_run[y], self.s_sq[rows], out=self.P[:r],
                                           tmp=self.T[:r])
            F = part if F is None else F + part
            c = 1 - lr * k
            GS = torch.mm(G, self.S, out=self.GS[:r]) if self.blocks is None else self.blocks.times(G, out=self.GS[:r])
            step = lr * u  # G = u·(G/u): the scale enters here, on N-vectors
            a_sq.mul_(c.square()).add_(step * (step * rowdot(GS, G, self.T[:r]) - 2 * c * rowdot(Z, G, self.T[:r])))
            rho.mul_(c)
            if self.a_weak.shape[1]:
                self.a_weak[rows].mul_(c).sub_(G @ self.weak_map, alpha=step)
            Z.mul_(c).sub_(GS, alpha=step)
        return F

    @torch.no_grad()
    def objective(self, i: int) -> ObjectiveValues:
        """F, the data loss, ‖∇_H F‖ and the logits of the current iterate, in float64, from the reduced state:
        Z = aMᵀ (N·r·K instead of autograd on N × d, one block of rows at a time) and, in the coordinates (a, ρ) of h,
        the gradient (Mᵀg_i + k_i a_i, k_i ρ_i) (class docstring), formed as a vector: near the optimum Mᵀg ≈ −k·a,
        and an expanded square would cancel to rounding."""
        f64 = torch.float64
        a, W = self._coordinates().to(f64), self.W.detach().to(f64)
        M = W @ self.Q.to(f64).T
        rho = self.rho.to(f64)
        F, data, grad_sq = 0.0, 0.0, 0.0
        rows_per_block = block_rows(W.shape[0], itemsize=8, copies=LOGIT_COPIES, device=W.device)
        for rows in row_blocks(self.N, rows_per_block):
            y = self.y[rows]
            n_sq = a[rows].square().sum(1, keepdim=True) + rho[rows].square()
            S_y = self.frame[y]  # the float64 Gram, not the run's rounding of it
            F_b, data_b, G, u, k = self._terms(a[rows] @ M.T, n_sq, y, S_y, rowdot(S_y, S_y))
            F, data = F + float(F_b), data + float(data_b)
            grad_sq += float(torch.addmm(k * a[rows], G, M, alpha=u).square().sum() + (k * rho[rows]).square().sum())
        return ObjectiveValues(F, data, grad_sq ** 0.5, lambda rows: a[rows] @ M.T)

    def _coordinates(self) -> torch.Tensor:
        """a (N × r), from the logits and the weak directions' own coordinates."""
        return torch.cat([self.Z @ self.read, self.a_weak], dim=1)

    def _resync(self) -> None:
        """‖a‖² from the coordinates themselves, and Z put back in S's range (what rounding left outside it)."""
        a = self._coordinates()
        self.a_sq = a.square().sum(1, keepdim=True)
        torch.mm(a, self.M.T, out=self.Z)

    def stalled(self) -> bool:
        return False

    def sync(self) -> None:
        pass

    def params(self, i: int) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            H = self._coordinates() @ self.Q + self.rho * self.U
        return {"H": H.requires_grad_(True), "W": self.W}
