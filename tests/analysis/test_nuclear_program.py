"""The count-group nuclear-norm program of analysis.nuclear_program against naive dense references
written here (DESIGN §5.2, §5.5): the compact form is the full K×K matrix, the objective and gradient
are those of the formula, and the dual bound obeys weak duality (Fenchel: −f*(Y) <= f(X) + ρ‖X‖_* for
every ‖Y‖₂ <= ρ) at any point. All float64."""

import math

import numpy as np
import pytest
import torch

from analysis.certificate import initial_point
from analysis.nuclear_program import CustomLoss, NuclearProgram, Point
from tests.custom_losses import ce_conjugate, ce_loss, mse_conjugate, mse_loss

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


# ----- custom losses (a torch function of the logits, the general K×K program) -------------------------------
MY_MSE = CustomLoss("my-mse", mse_loss, mse_conjugate)
MY_CE = CustomLoss("my-ce", ce_loss, ce_conjugate, shift_invariant=True)
CUSTOM_COUNTS = [5, 5, 2]


@pytest.mark.parametrize("bias,wd_b", BIASES)
def test_custom_mse_is_the_builtin_general_program(bias, wd_b):
    """The generic path (the loss by the user's function, its gradient by autograd, f* from the user's
    conjugate) computes the same f, ∇f and dual bound as the hand-written MSE of the general program."""
    mine = NuclearProgram.from_counts(CUSTOM_COUNTS, MY_MSE, 1e-2, 2e-2, wd_b, bias)
    ref = NuclearProgram.from_counts(CUSTOM_COUNTS, "mse", 1e-2, 2e-2, wd_b, bias, grouped=False)
    assert (mine.kind, mine.G, mine.K, mine.shift_invariant, mine.has_dual) == ("custom", 3, 3, False, True)
    for seed, scale in enumerate([0.01, 0.5, 3.0]):
        p = random_point(ref, seed, scale)
        assert mine.objective(p) == pytest.approx(ref.objective(p), rel=1e-14)
        a, b = mine.smooth(p), ref.smooth(p)
        assert torch.allclose(a.Y_M, b.Y_M, rtol=1e-13, atol=1e-16)
        assert torch.allclose(a.g_beta, b.g_beta, rtol=1e-13, atol=1e-16)
        assert mine.dual_bound(p) == pytest.approx(ref.dual_bound(p), rel=1e-13)


@pytest.mark.parametrize("bias,wd_b", BIASES)
def test_custom_ce_value_gradient_and_weak_duality(bias, wd_b):
    """CE written by the user: the value and gradient of the built-in CE (general program); its dual bound
    (no mixing into the simplex: an infeasible candidate gives no bound) obeys weak duality everywhere."""
    mine = NuclearProgram.from_counts(CUSTOM_COUNTS, MY_CE, 1e-3, 1e-3, wd_b, bias)
    ref = NuclearProgram.from_counts(CUSTOM_COUNTS, "ce", 1e-3, 1e-3, wd_b, bias, grouped=False)
    assert mine.shift_invariant and mine.bias_scale == pytest.approx(ref.bias_scale / 4)
    points = [random_point(ref, s, scale) for s, scale in enumerate([0.01, 0.3, 1.0, 5.0, 30.0])]
    # a point's bias is beta·bias_scale, and the built-in CE's scale is 4× the custom one: the same b
    points = [Point(p.M, p.d, p.beta * ref.bias_scale / mine.bias_scale) for p in points]
    lowest = min(mine.objective(q) for q in points)
    for p in points:
        q = Point(p.M, p.d, p.beta * mine.bias_scale / ref.bias_scale)  # p for the built-in program
        assert mine.objective(p) == pytest.approx(ref.objective(q), rel=1e-13)
        assert torch.allclose(mine.smooth(p).Y_M, ref.smooth(q).Y_M, rtol=1e-12, atol=1e-15)
        lower = mine.dual_bound(p)
        assert lower <= lowest * (1 + 1e-14) or lower == -math.inf


def test_custom_loss_without_conjugate_has_no_dual_bound():
    prog = NuclearProgram.from_counts(CUSTOM_COUNTS, CustomLoss("no-conj", mse_loss), 1e-2, 1e-2)
    assert not prog.has_dual
    assert prog.dual_bound(random_point(prog, 0)) == -math.inf


def _bad_shape(U, y):
    return (U**2).sum()  # a scalar, not one value per row


@pytest.mark.parametrize("custom, message", [
    (CustomLoss("shape", lambda Z, y: (Z**2).sum(), mse_conjugate), "shape"),
    (CustomLoss("per-class", lambda Z, y: (Z**2).sum(0), mse_conjugate), "shape"),  # (K,): right only when M = K
    (CustomLoss("batch-mean", lambda Z, y: mse_loss(Z, y) - mse_loss(Z, y).mean(), None), "not per sample"),
    (CustomLoss("float32", lambda Z, y: mse_loss(Z, y).float(), mse_conjugate), "float64"),
    (CustomLoss("numpy", lambda Z, y: mse_loss(Z, y).detach().numpy(), mse_conjugate), "float64 tensor"),
    (CustomLoss("conj-shape", mse_loss, _bad_shape), "conjugate must return"),
    (CustomLoss("conj-2d", mse_loss, lambda U, y: U**2), "conjugate must return"),
    (CustomLoss("raises", lambda Z, y: Z[:, 5], None), "failed"),
    (CustomLoss("nan", mse_loss, lambda U, y: torch.full((U.shape[0],), math.nan, dtype=U.dtype)), "NaN"),
    # wrong conjugates: Fenchel–Young equality at u = ∇ℓ(z) fails at the probe
    (CustomLoss("no-u_y", mse_loss, lambda U, y: 0.5 * (U**2).sum(1)), "Fenchel–Young"),
    (CustomLoss("too-low", mse_loss, lambda U, y: mse_conjugate(U, y) - 1e-6), "Fenchel–Young"),
    (CustomLoss("sign", mse_loss, lambda U, y: -mse_conjugate(U, y)), "Fenchel–Young"),
    (CustomLoss("not-shift", mse_loss, mse_conjugate, shift_invariant=True), "shift_invariant"),
    # declared convex (every CustomLoss is) but concave: below its tangents between the probe points
    (CustomLoss("concave", lambda Z, y: -(Z**2).sum(1), None), "not convex in the logits"),
    (CustomLoss("neg-ce", lambda Z, y: Z.gather(1, y[:, None])[:, 0] - Z.logsumexp(1), None), "not convex"),
])
def test_custom_losses_that_break_the_contract_are_refused(custom, message):
    """Shapes, dtypes, NaN and conjugates that are not the loss's are refused at construction: a bound
    from them would be false or meaningless."""
    with pytest.raises(ValueError, match=message):
        NuclearProgram.from_counts(CUSTOM_COUNTS, custom, 1e-2, 1e-2)


def test_custom_loss_fields_and_builtin_options_are_checked():
    with pytest.raises(ValueError, match="name"):
        CustomLoss("", mse_loss)
    with pytest.raises(ValueError, match="callable"):
        CustomLoss("x", "mse")
    with pytest.raises(ValueError, match="callable"):
        CustomLoss("x", mse_loss, conjugate=0.5)
    with pytest.raises(ValueError, match="built-in"):
        NuclearProgram.from_counts(CUSTOM_COUNTS, MY_MSE, 1e-2, 1e-2, smoothing=0.1)
    with pytest.raises(ValueError, match="wd_W > 0"):
        NuclearProgram.from_counts(CUSTOM_COUNTS, MY_MSE, 0.0, 1e-2)


def test_a_conjugate_wrong_only_far_from_the_probe_is_caught_by_fenchel_young():
    """ℓ*(u) too low only where ‖u‖_∞ > 100 (the probe points never reach it): the first dual point there
    violates ℓ(z) + ℓ*(u) ≥ ⟨u, z⟩ and the bound is refused instead of returned."""
    def cheat(U, y):
        return mse_conjugate(U, y) - (U.abs().amax(1) > 100).double()

    # ρ = 1000: the gradient at logits of ~1000 lies in the spectral ball and is a dual candidate as it is
    prog = NuclearProgram.from_counts(CUSTOM_COUNTS, CustomLoss("cheat", mse_loss, cheat), 1e3, 1e3)
    assert math.isfinite(prog.dual_bound(random_point(prog, 0)))  # small logits: fine
    with pytest.raises(ValueError, match="Fenchel–Young"):
        prog.dual_bound(random_point(prog, 0, scale=1000.0))
