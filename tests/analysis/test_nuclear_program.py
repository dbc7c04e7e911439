"""The count-group nuclear-norm program of analysis.nuclear_program against naive dense references
written here (DESIGN §5.2, §5.5): the compact form is the full K×K matrix, the objective and gradient
are those of the formula, and the dual bound obeys weak duality (Fenchel: −f*(Y) <= f(X) + ρ‖X‖_* for
every ‖Y‖₂ <= ρ) at any point. All float64."""

import math

import numpy as np
import pytest
import torch

from analysis.certificate import initial_point
from analysis.nuclear_program import NuclearProgram, Point

COUNTS = [7, 7, 7, 3, 3, 1]  # groups of 3, 2 and 1 classes
LOSSES = ["ce", "ls", "mse", "soft"]
BIASES = [(False, 0.0), (True, 0.0), (True, 0.3)]  # none, free, regularized


def soft_targets(K, seed=0):
    T = np.random.default_rng(seed).random((K, K)) + np.eye(K)
    return T / T.sum(1, keepdims=True)


def program(loss, bias=False, wd_b=0.0, counts=COUNTS, lam=1e-2, grouped=True):
    return NuclearProgram.from_counts(counts, loss, lam, 2 * lam, wd_b, bias, smoothing=0.2, target_scale=1.5,
                                      soft_targets=soft_targets(len(counts)) if loss == "soft" else None,
                                      grouped=grouped)


def random_point(prog, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: scale * torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    d = torch.where(prog.grouped, r(prog.G), 0.0)
    return Point(r(prog.G, prog.G), d, r(prog.G) if prog.bias else torch.zeros(prog.G, dtype=torch.float64))


def dense_targets(prog, loss):
    K = prog.K
    if loss == "soft":
        return soft_targets(K)
    T = np.full((K, K), {"ce": 0.0, "mse": 0.0, "ls": 0.2 / K}[loss])
    np.fill_diagonal(T, {"ce": 1.0, "mse": 1.5, "ls": 1 - 0.2 + 0.2 / K}[loss])
    return T


def naive_objective(X, b, counts, loss, T, rho, wd_b):
    """Σ_k w_k ℓ(x_k/√n_k + b) + ρ‖X‖_* + λ_b/2‖b‖², from the definition (torch, autograd-able in X)."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    w = counts / counts.sum()
    Z = X / counts.sqrt()[:, None] + b
    T = torch.as_tensor(T)
    if loss == "mse":
        rows = 0.5 * ((Z - T) ** 2).sum(1)
    else:
        rows = torch.logsumexp(Z, 1) - (T * Z).sum(1)
    return (w * rows).sum() + rho * torch.linalg.svdvals(X).sum() + 0.5 * wd_b * (b * b).sum()


def test_compact_form_is_the_dense_block_symmetric_matrix():
    prog = program("ce")
    assert (prog.G, prog.K) == (3, 6)
    p = random_point(prog, 0)
    X, _ = prog.dense(p)
    # singular values: those of M, and |d_g| repeated m_g − 1 times
    expected = np.sort(np.concatenate([torch.linalg.svdvals(p.M).numpy()] +
                                      [np.full(int(m) - 1, abs(float(d))) for m, d in zip(prog.m, p.d, strict=True)]))
    assert np.allclose(np.sort(np.linalg.svd(X, compute_uv=False)), expected, rtol=1e-13, atol=1e-13)
    assert prog.nuclear_norm(p.M, p.d) == pytest.approx(np.linalg.svd(X, compute_uv=False).sum(), rel=1e-13)
    assert prog.spectral_norm(p.M, p.d) == pytest.approx(np.linalg.norm(X, 2), rel=1e-13)
    # a class's row: its own entry, then one value per group; classes of one group share it
    own, group = prog.entries(p.M, p.d)
    M, d = prog.compact(own, group)
    assert torch.allclose(M, p.M, atol=1e-14) and torch.allclose(d, p.d, atol=1e-14)
    g, h = prog.class_group[0], prog.class_group[3]  # the groups of count 7 and of count 3
    assert X[0, 1] == X[1, 0] == X[2, 1] == pytest.approx(float(group[g, g]), rel=1e-14)
    assert X[0, 3] == X[2, 4] == pytest.approx(float(group[g, h]), rel=1e-14)
    assert X[0, 0] == X[1, 1] == pytest.approx(float(own[g]), rel=1e-14)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("bias,wd_b", BIASES)
def test_objective_and_gradient_equal_the_dense_formula(loss, bias, wd_b):
    prog = program(loss, bias, wd_b)
    if loss == "soft":
        assert prog.G == prog.K  # targets that follow a tree break the symmetry: every class its own group
    p = random_point(prog, 1)
    X, b = prog.dense(p)
    Xt = torch.tensor(X, requires_grad=True)
    F = naive_objective(Xt, torch.tensor(b), COUNTS, loss, dense_targets(prog, loss), prog.rho, wd_b)
    assert prog.objective(p) == pytest.approx(float(F.detach()), rel=1e-13)
    # the gradient of the smooth part, in compact form, expanded: the dense ∂f/∂X
    F_smooth = F - prog.rho * torch.linalg.svdvals(Xt).sum()
    (grad,) = torch.autograd.grad(F_smooth, Xt)
    sm = prog.smooth(p)
    Y, _ = prog.dense(Point(sm.Y_M, sm.Y_d, p.beta))
    assert np.allclose(Y, grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("bias,wd_b", BIASES)
def test_weak_duality_at_random_points(loss, bias, wd_b):
    """Fenchel duality: the bound from any point lies below the objective at every other point."""
    prog = program(loss, bias, wd_b, lam=1e-3)
    points = [random_point(prog, s, scale) for s, scale in enumerate([0.01, 0.3, 1.0, 5.0, 30.0])]
    points.append(initial_point(prog))
    lowest = min(prog.objective(q) for q in points)
    for p in points:
        lower = prog.dual_bound(p)
        assert lower <= lowest * (1 + 1e-14) or lower == -math.inf


@pytest.mark.parametrize("lam", [1e-10, 1e-4, 0.3])
def test_dual_bound_is_tight_at_the_closed_form_ce_optimum(lam):
    """Balanced CE (Zhu et al. 2021): the start of the solver is the closed-form optimum, where the dual
    bound from its gradient equals the objective to rounding — including at λ = 1e-10, where F* ~ 1e-8
    and a naive lse(z) − z_y loses seven digits."""
    prog = NuclearProgram.from_counts([5] * 4, "ce", lam, lam)
    p = initial_point(prog)
    upper, lower = prog.objective(p), prog.dual_bound(p)
    assert abs(upper - lower) <= 1e-14 * upper


def test_cross_entropy_is_accurate_near_interpolation():
    """ℓ = log(1 + Σ_j e^{z_j − z_y}) at logit gaps of 30: 1e-13 of a loss of 1e-13, and its gradient."""
    prog = NuclearProgram.from_counts([4, 4, 4], "ce", 1e-3, 1e-3, grouped=False)
    z_own = torch.tensor([30.0, 0.0, 0.0], dtype=torch.float64)
    z_group = torch.tensor([[0.0, 0.0, 0.0], [30.0, 0.0, 30.0], [0.0, 30.0, 0.0]], dtype=torch.float64)
    loss, u_own, _ = prog.loss_rows(z_own, z_group)
    exact = math.log1p(2 * math.exp(-30))
    assert float(loss[0]) == pytest.approx(exact, rel=1e-14)
    assert float(u_own[0]) == pytest.approx(-2 * math.exp(-30) / (1 + 2 * math.exp(-30)), rel=1e-14)
    # a tie of two maxima (class 1 puts 30 on classes 0 and 2)
    assert float(loss[1]) == pytest.approx(30 + math.log(2 + math.exp(-30)), rel=1e-14)


@pytest.mark.parametrize("kwargs, message", [
    (dict(loss="soft"), "soft_targets"),
    (dict(loss="soft", soft_targets=np.full((3, 3), 0.3)), "sum to 1"),
    (dict(loss="ls", smoothing=1.5), "smoothing"),
    (dict(loss="ce", wd_W=0.0), "wd_W > 0"),
    (dict(loss="hxe"), "loss must be"),
])
def test_programs_that_are_not_bounded_below_are_refused(kwargs, message):
    """Targets that are not distributions make CE unbounded below: no finite bound could be a proof."""
    args = {"counts": [3, 3, 2], "wd_W": 1e-2, "wd_H": 1e-2, **kwargs}
    with pytest.raises(ValueError, match=message):
        NuclearProgram.from_counts(**args)
