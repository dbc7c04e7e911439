"""A fixed classifier (HAFrame's frame, HUG's fixed proxies) makes most of H's coordinates idle: the loss sees h_i
only through Wh_i and ‖h_i‖, so the gradient of row i lies in span(rows of W) + span(h_i). Write
h_i = a_i Q + ρ_i u_i (Q: an orthonormal basis of W's row space, r × d; u_i: the unit direction of h_i's part
orthogonal to it, fixed by the start); every GD or heavy-ball step keeps that form, moving only the r + 1
numbers (a_i, ρ_i): the map (a_i, ρ_i) → h_i is an isometry, and these steps are linear in the gradient. So the
run is stepped on h̃_i = (a_i, ρ_i) ∈ R^{r+1} with the classifier W̃ = (W Qᵀ, 0) — the same objective values and
the same iterates mapped back, at the cost of a (K + 1)-dimensional problem instead of a d-dimensional one
(d = 512, K = 100 for CIFAR-100's HAFrame); under full-batch GD, HAFrame's step is also written out (no autograd).
Adam and torch's L-BFGS are not rotation-equivariant (coordinate-wise scalings, an L1 norm): they step in the
full space."""

from __future__ import annotations

import torch

from ufm.config import SimConfig
from ufm.fit.steppers import Autograd
from ufm.problem import Problem

# torch's L-BFGS scales its first step by 1/‖g‖₁ and stops on max|g_i|: coordinate-wise, like Adam
REDUCIBLE_OPTIMIZERS = ("gd", "sgd")


def reducible(cfg: SimConfig) -> bool:
    """A one-layer run with a fixed classifier under GD or heavy-ball SGD, with room to gain (d > K + 1)."""
    return (cfg.fixed_classifier and cfg.loss.name in ("haframe", "hug") and cfg.depth == 1
            and cfg.features == "free" and cfg.normalize == "none" and cfg.optimizer in REDUCIBLE_OPTIMIZERS
            and cfg.d > cfg.K + 1)


class FixedFrame:
    """The Autograd stepper on the reduced coordinates h̃ = (a, ρ) (module docstring); `params(0)` maps them back to
    H = aQ + ρu. Example (equal to the full-space step, up to rounding):
    >>> from ufm.config import SimConfig; from ufm.problem import resolve; from ufm.model import init_params
    >>> p = resolve(SimConfig(K=4, n=3, d=16, loss="haframe", hierarchy="balanced:2,2", dtype="float64"))
    >>> full = init_params(p, torch.device("cpu"), torch.float64); y = p.labels()
    >>> reduced = FixedFrame(p, {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in full.items()}, y)
    >>> ref = Autograd(p, full, y); _ = [(ref.step(), reduced.step()) for _ in range(5)]
    >>> float((reduced.params(0)["H"] - ref.params(0)["H"]).abs().max()) < 1e-12
    True
    """

    def __init__(self, problem: Problem, params: dict[str, torch.Tensor], y: torch.Tensor):
        W, H = params["W"].detach(), params["H"].detach()
        _, sv, Vh = torch.linalg.svd(W, full_matrices=False)
        r = int((sv > sv[0] * 1e-12).sum())
        self.Q = Vh[:r]  # (r, d): orthonormal rows spanning W's rows
        a = H @ self.Q.T
        rest = H - a @ self.Q
        rho = rest.norm(dim=1, keepdim=True)
        self.U = rest / rho.clamp_min(torch.finfo(H.dtype).tiny)  # (N, d): each row's own orthogonal direction
        self.W = params["W"]
        W_reduced = torch.cat([W @ self.Q.T, torch.zeros(len(W), 1, dtype=W.dtype, device=W.device)], dim=1)
        self.reduced = {"H": torch.cat([a, rho], dim=1).requires_grad_(True), "W": W_reduced}
        cfg = problem.cfg
        full_batch = cfg.batch_size is None or cfg.batch_size >= cfg.N
        self.manual = cfg.loss.name == "haframe" and cfg.optimizer == "gd" and full_batch
        if self.manual:  # the closed-form GD step: no autograd graph, no optimizer
            opts = problem.options
            self.S_y = opts.hierarchy.frame_gram.to(device=W.device, dtype=W.dtype)[y]  # (N, K) targets S_{k,y_i}
            self.Y = torch.nn.functional.one_hot(y, cfg.K).to(W.dtype)
            self.alpha, self.lr, self.wd = opts.cosine_weight, cfg.lr, cfg.wd_H
        else:
            self.inner = Autograd(problem, self.reduced, y)

    def step(self) -> torch.Tensor:
        if self.manual:
            return self._haframe_gd_step()
        return self.inner.step()

    @torch.no_grad()
    def _haframe_gd_step(self) -> torch.Tensor:
        """One GD step on F = (1 − α)·CE(Z) + α·mean_i Σ_k (z_ik/‖h_i‖ − S_{k,y_i})² + λ_H/2‖H‖², Z = HW̃ᵀ (unit
        rows): ∂F/∂Z = ((1 − α)(softmax Z − Y) + 2α·R/n)/N with R = Z/n − S_y, n_i = ‖h_i‖, and through the norm
        ∂F/∂n_i = −(2α/N)·Σ_k R_ik z_ik/n_i², ∂n_i/∂h_i = h_i/n_i. Returns F before the step."""
        H, W, a, N = self.reduced["H"], self.reduced["W"], self.alpha, len(self.Y)
        Z = H @ W.T
        n = H.norm(dim=1, keepdim=True).clamp_min(torch.finfo(H.dtype).tiny)
        R = Z / n - self.S_y
        log_p = Z.log_softmax(1)
        F = ((1 - a) * -(log_p * self.Y).sum() + a * R.square().sum()) / N + 0.5 * self.wd * H.square().sum()
        G_Z = ((1 - a) * (log_p.exp() - self.Y) + (2 * a) * R / n) / N
        G_n = -(2 * a / N) * (R * Z).sum(1, keepdim=True) / n.square()
        grad = G_Z @ W + (G_n / n) * H + self.wd * H
        H.sub_(grad, alpha=self.lr)
        return F

    def stalled(self) -> bool:
        return not self.manual and self.inner.stalled()

    def sync(self) -> None:
        pass

    def params(self, i: int) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            h = self.reduced["H"]
            H = h[:, :-1] @ self.Q + h[:, -1:] * self.U
        return {"H": H.requires_grad_(True), "W": self.W}
