"""Closed forms of analysis.theory (DESIGN §5.2): the DESIGN's worked examples, and a theorem check —
the predicted point (W, H, b) is a critical point of the UFM objective with the predicted value F*.
All in float64."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis.metrics import etf_distance
from analysis.theory import (
    ce_etf,
    etf_gram,
    factorize_logits,
    group_collapse_threshold,
    minority_parallel_ratio,
    mse_bias_free,
    mse_free_bias,
    mse_free_bias_counts,
    seli_grams,
)


def objective(W, H, b, y, loss, wd_W, wd_H, smoothing=0.0, scale=1.0):
    """F = (1/N) Σ ℓ + λ_W/2‖W‖² + λ_H/2‖H‖², written out independently of ufm."""
    Z = H @ W.T + (b if b is not None else 0)
    K = W.shape[0]
    if loss == "mse":
        data = 0.5 * ((Z - scale * F.one_hot(y, K).double()) ** 2).sum(1).mean()
    else:
        q = (1 - smoothing) * F.one_hot(y, K).double() + smoothing / K
        data = -(q * torch.log_softmax(Z, 1)).sum(1).mean()
    return data + wd_W / 2 * W.square().sum() + wd_H / 2 * H.square().sum()


def check_critical_point(W, H, b, y, value, **kw):
    params = [torch.tensor(W, requires_grad=True), torch.tensor(H, requires_grad=True)]
    if b is not None:
        params.append(torch.tensor(b, requires_grad=True))
    Fv = objective(params[0], params[1], params[2] if b is not None else None, torch.tensor(y), **kw)
    grads = torch.autograd.grad(Fv, params)
    assert float(Fv.detach()) == pytest.approx(value, rel=1e-12)
    for g in grads:
        assert float(g.abs().max()) < 1e-12


def etf_point(K, n, d, W_norm_sq, wd_W, wd_H):
    """W: K simplex-ETF rows with ‖W‖² = W_norm_sq in R^d; h_i = √(λ_W/(nλ_H))·w_{y_i} (Zhu et al. 2021)."""
    E = np.eye(K) - 1.0 / K
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(d, d)))
    W = math.sqrt(W_norm_sq / K) * E @ Q[:K]
    y = np.repeat(np.arange(K), n)
    H = math.sqrt(wd_W / (n * wd_H)) * W[y]
    return W, H, y


def test_design_example_mse():
    # DESIGN §5.2: K=10, n=100, λ=5e-4 → c = 0.005
    t = mse_bias_free([100] * 10, d=512, wd_W=5e-4, wd_H=5e-4)
    assert t.predicted["loss"] == pytest.approx(0.04875, rel=1e-13)
    assert t.predicted["W_norm_sq"] == pytest.approx(95.0, rel=1e-13)
    assert t.predicted["H_norm_sq"] == pytest.approx(95.0, rel=1e-13)
    t = mse_free_bias(10, 100, d=512, wd_W=5e-4, wd_H=5e-4)
    assert t.predicted["loss"] == pytest.approx(0.043875, rel=1e-13)
    assert t.predicted["W_norm_sq"] == pytest.approx(85.5, rel=1e-13)
    # formula form: bias-free F* = Kc − K²c²/2, free bias F* = (K−1)c(1 − Kc/2)
    c, K = 0.005, 10
    assert mse_bias_free([100] * 10, 512, 5e-4, 5e-4).predicted["loss"] == pytest.approx(K * c - K**2 * c**2 / 2)
    assert mse_free_bias(10, 100, 512, 5e-4, 5e-4).predicted["loss"] == pytest.approx((K - 1) * c * (1 - K * c / 2))


def test_design_example_ce():
    # DESIGN §5.2: K=4, n=5, λ_W=λ_H=5e-3 → F* = 0.1836920, ‖W‖² = 29.915115
    t = ce_etf(4, 5, d=8, wd_W=5e-3, wd_H=5e-3)
    assert t.predicted["loss"] == pytest.approx(0.1836920, abs=5e-8)
    assert t.predicted["W_norm_sq"] == pytest.approx(29.915115, abs=5e-7)


@pytest.mark.parametrize("wd_W,wd_H", [(5e-4, 5e-4), (1e-3, 2e-4)])
def test_mse_bias_free_is_critical_point_balanced(wd_W, wd_H):
    # Z = (1 − Kc)Y: orthogonal rows w_k = √σ (λ_H/λ_W)^{1/4} e_k, features √σ (λ_W/λ_H)^{1/4}/√n e_y,
    # σ = √n − N√(λ_Wλ_H) the shrunk singular value
    K, n, d = 5, 8, 7
    p = mse_bias_free([n] * K, d, wd_W, wd_H).predicted
    sigma = math.sqrt(n) - K * n * math.sqrt(wd_W * wd_H)
    y = np.repeat(np.arange(K), n)
    W = np.zeros((K, d))
    W[np.arange(K), np.arange(K)] = math.sqrt(sigma) * (wd_H / wd_W) ** 0.25
    H = np.zeros((K * n, d))
    H[np.arange(K * n), y] = math.sqrt(sigma) * (wd_W / wd_H) ** 0.25 / math.sqrt(n)
    check_critical_point(W, H, None, y, p["loss"], loss="mse", wd_W=wd_W, wd_H=wd_H)
    assert (W**2).sum() == pytest.approx(p["W_norm_sq"], rel=1e-12)
    assert (H**2).sum() == pytest.approx(p["H_norm_sq"], rel=1e-12)


def test_mse_bias_free_imbalanced_is_critical_point():
    # Z_k = (1 − N√(λ_Wλ_H)/√n_k)₊ Y_k; the smallest class (n=1) vanishes: √1 <= N√(λλ) = 1.1
    counts, d, lam = np.array([400, 100, 50, 1]), 6, 2e-3
    N, K = counts.sum(), len(counts)
    p = mse_bias_free(counts, d, lam, lam).predicted
    y = np.repeat(np.arange(K), counts)
    shrunk = np.clip(np.sqrt(counts) - N * lam, 0, None)
    assert shrunk[-1] == 0 and (shrunk[:-1] > 0).all()
    W = np.zeros((K, d))
    W[np.arange(K), np.arange(K)] = np.sqrt(shrunk)
    H = np.zeros((N, d))
    H[np.arange(N), y] = np.sqrt(shrunk)[y] / np.sqrt(counts)[y]
    check_critical_point(W, H, None, y, p["loss"], loss="mse", wd_W=lam, wd_H=lam)
    assert "nc2" not in p  # a vanished class leaves the NC geometry undefined


def test_mse_free_bias_is_critical_point():
    K, n, d, wd_W, wd_H = 4, 6, 5, 3e-3, 1e-3
    p = mse_free_bias(K, n, d, wd_W, wd_H).predicted
    W, H, y = etf_point(K, n, d, p["W_norm_sq"], wd_W, wd_H)
    check_critical_point(W, H, np.full(K, 1.0 / K), y, p["loss"], loss="mse", wd_W=wd_W, wd_H=wd_H)
    assert (H**2).sum() == pytest.approx(p["H_norm_sq"], rel=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("wd_W,wd_H", [(5e-3, 5e-3), (2e-3, 8e-3)])
def test_ce_etf_is_critical_point(smoothing, wd_W, wd_H):
    # Zhu et al. 2021, Thm 3.1 (and its label-smoothing analogue: wrong classes get c + α/K)
    K, n, d = 4, 5, 6
    p = ce_etf(K, n, d, wd_W, wd_H, smoothing).predicted
    W, H, y = etf_point(K, n, d, p["W_norm_sq"], wd_W, wd_H)
    check_critical_point(W, H, None, y, p["loss"], loss="ce", wd_W=wd_W, wd_H=wd_H, smoothing=smoothing)
    Z = H @ W.T
    assert Z[0, 0] - Z[0, 1] == pytest.approx(p["logit_gap"], rel=1e-12)


def test_collapse_to_zero_threshold():
    # Kc >= 1: everything collapses; MSE bias-free F* = ½, CE F* = ln K
    K, n = 4, 25
    lam = 1.0 / (K * math.sqrt(n)) * 1.01  # c = √n·λ slightly above 1/K
    t = mse_bias_free([n] * K, 8, lam, lam)
    assert t.predicted["W_norm_sq"] == 0 and t.predicted["loss"] == pytest.approx(0.5)
    t = ce_etf(K, n, 8, lam, lam)
    assert t.predicted["W_norm_sq"] == 0 and t.predicted["loss"] == pytest.approx(math.log(K))


def test_targets_refuse_what_they_do_not_cover():
    assert not mse_bias_free([5] * 6, d=4, wd_W=1e-3, wd_H=1e-3).applies  # needs d >= K
    assert not ce_etf(6, 5, d=4, wd_W=1e-3, wd_H=1e-3).applies  # needs d >= K − 1
    assert not mse_free_bias(3, 5, d=4, wd_W=0.0, wd_H=1e-3).applies  # no weight decay


def test_etf_gram():
    G = etf_gram(5)
    assert np.allclose(np.diag(G), 1) and np.allclose(G[0, 1], -1 / 4)
    assert np.allclose(G.sum(1), 0)


@pytest.mark.parametrize("counts,lam", [((40, 10, 10, 2), 1e-3), ((30, 20, 10, 5, 5), 2e-3), ((8, 8, 8), 5e-3),
                                        ((400, 100, 50, 1), 2e-3)])
def test_mse_free_bias_any_counts_is_critical_point(counts, lam):
    """MSE with a free bias, any counts (analysis.theory.mse_free_bias_counts): Z = SVT_{Nρ}(C·Y) on the
    N×K centered labels, b = n/N — written here on N×K matrices and checked as a critical point of F."""
    counts = np.asarray(counts)
    K, N = len(counts), counts.sum()
    y = np.repeat(np.arange(K), counts)
    Y = np.eye(K)[y]
    U, S, Vt = np.linalg.svd(Y - Y.mean(0), full_matrices=False)
    S = np.clip(S - N * lam, 0, None)
    r = int((S > 0).sum())
    W = Vt[:r].T * np.sqrt(S[:r])
    H = U[:, :r] * np.sqrt(S[:r])
    b = counts / N
    p = mse_free_bias_counts(counts, d=K, wd_W=lam, wd_H=lam).predicted
    check_critical_point(W, H, b, y, p["loss"], loss="mse", wd_W=lam, wd_H=lam)
    assert (W**2).sum() == pytest.approx(p["W_norm_sq"], rel=1e-12)
    assert p["b_mean"] == pytest.approx(1 / K, rel=1e-12)
    if len(set(counts.tolist())) == 1:  # balanced: the closed form of mse_free_bias
        assert p["loss"] == pytest.approx(mse_free_bias(K, counts[0], K, lam, lam).predicted["loss"], rel=1e-13)


def within_group_part(counts, lam, loss="ce", bias=False):
    """|d_g| of every count group of the certified optimum (the part of X that tells a group's classes
    apart; 0 ⟺ their classifiers and class means coincide)."""
    from analysis.certificate import solve
    from analysis.nuclear_program import NuclearProgram

    sol = solve(NuclearProgram.from_counts(counts, loss, lam, lam, 0.0, bias))
    assert sol.certificate.certified
    values = np.unique(np.asarray(counts, dtype=float))
    return {int(v): abs(float(d)) for v, d in zip(values, sol.point.d, strict=True)}


@pytest.mark.parametrize("bias", [False, True])
def test_minority_classifiers_coincide_exactly_from_the_closed_form_ratio(bias):
    """Two count groups, CE (analysis.theory.minority_parallel_ratio, derived from the optimality
    condition of the within-group part): just above R* the minority part of the certified optimum is
    exactly 0 (soft-thresholded), just below it is not; the bisection on the cosine (>= 0.999) lies just
    below R*."""
    from analysis.convex import ufm_critical_ratio

    K_A, K_B, n_A, lam = 7, 3, 1000, 5e-4
    R = minority_parallel_ratio(K_A, K_B, n_A, lam, lam)
    assert R == pytest.approx(80.77, abs=0.01)
    for factor, collapsed in ((1.001, True), (0.99, False)):
        n_B = n_A / (R * factor)
        d_B = within_group_part([n_A] * K_A + [n_B] * K_B, lam, bias=bias)[int(n_B)]
        assert d_B == 0 if collapsed else d_B > 1e-6
        assert group_collapse_threshold([n_A] * K_A + [n_B] * K_B, lam, lam)[n_B] == collapsed
    assert 0.9 * R < ufm_critical_ratio(K_A, K_B, n_A, lam, lam) <= R * 1.001


def test_group_collapse_threshold_with_three_groups():
    """√n_g <= N·√(λ_Wλ_H)/margin ⟺ the group's part of the optimum vanishes, group by group (CE)."""
    counts, lam = [400] * 3 + [40] * 3 + [4] * 4, 3e-3
    predicted = group_collapse_threshold(counts, lam, lam)
    assert predicted == {4: True, 40: False, 400: False}  # N√λλ = 4.0: √4 = 2 collapses, √40 = 6.3 does not
    d = within_group_part(counts, lam)
    assert d[4] == 0 and d[40] > 1e-3 and d[400] > 1e-3


def test_seli_is_the_small_weight_decay_limit_of_imbalanced_ce():
    """Thrampoulidis et al. 2022: as λ → 0 the bias-free imbalanced CE optimum tends (in direction) to
    SELI. Measured on the certified optima: the normalized Gram distances fall monotonically, at the
    rate 1/log(1/λ) of the logits' growth (halving from λ = 1e-7 to 1e-14)."""
    from analysis.certificate import nuclear_norm_certificate
    from analysis.metrics import gram_distance

    counts = [20, 20, 20, 5, 5, 2]
    ref = seli_grams(counts)
    dist = {}
    for lam in (1e-2, 1e-4, 1e-7, 1e-10, 1e-14):
        opt = nuclear_norm_certificate(counts, "ce", lam, lam)
        F = opt.features
        dist[lam] = (gram_distance(opt.grams["W"], ref["W"]), gram_distance(F @ F.T, ref["means"]))
    values = list(dist.values())
    assert all(a[0] > b[0] and a[1] > b[1] for a, b in zip(values, values[1:], strict=False))
    assert dist[1e-14][0] < 0.025 and dist[1e-14][1] < 0.04
    assert dist[1e-14][0] / dist[1e-7][0] == pytest.approx(0.5, abs=0.05)
    # balanced counts: SELI is the simplex ETF
    assert etf_distance(seli_grams([3] * 5)["means"]) < 1e-14


# ----- focal loss (Zhou et al. 2022: the balanced UFM's global minimizers are simplex ETFs) ------------------
def test_focal_etf_at_gamma_zero_is_the_ce_closed_form():
    """γ = 0 is CE: the one-dimensional problem must land on Zhu et al.'s closed form (DESIGN §5.2)."""
    from analysis.theory import focal_etf

    for K, n, lam in [(2, 3, 1e-2), (4, 5, 5e-3), (10, 100, 5e-4), (6, 3, 1e-6)]:
        got, ref = focal_etf(K, n, K + 2, lam, lam, 0.0).predicted, ce_etf(K, n, K + 2, lam, lam).predicted
        for key in ("loss", "W_norm_sq", "H_norm_sq", "logit_gap"):
            assert got[key] == pytest.approx(ref[key], rel=1e-8), (K, key)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("K,n,lam", [(2, 4, 1e-2), (4, 5, 5e-3), (10, 100, 5e-4)])
def test_focal_etf_solves_the_scale_problem(gamma, K, n, lam):
    """An independent minimization in numpy over a fine grid of the ETF's scale ρ: F(ρ) = ℓ_γ(ρK/(K−1)) + Kcρ
    with ℓ_γ(u) = −(1 − p)^γ log p, p = 1/(1 + (K−1)e^{−u})."""
    from analysis.theory import focal_etf

    c = math.sqrt(n * lam * lam)

    def F(rho):
        p = 1 / (1 + (K - 1) * np.exp(-rho * K / (K - 1)))
        return -((1 - p) ** gamma) * np.log(p) + K * c * rho

    coarse = np.linspace(0, 60, 600_001)
    best = coarse[F(coarse).argmin()]
    fine = np.linspace(max(best - 2e-4, 0), best + 2e-4, 400_001)  # the minimum to ~1e-9 in ρ
    rho_star, F_star = fine[F(fine).argmin()], F(fine).min()
    t = focal_etf(K, n, K + 2, lam, lam, gamma).predicted
    assert t["loss"] == pytest.approx(F_star, rel=1e-12, abs=1e-15)
    assert t["W_norm_sq"] / (K * math.sqrt(n)) == pytest.approx(rho_star, rel=1e-6)
    # the balanced factorization: ‖W‖²·λ_W = ‖H‖²·λ_H
    assert t["W_norm_sq"] * lam == pytest.approx(t["H_norm_sq"] * lam, rel=1e-12)


def test_focal_etf_collapses_to_zero_under_large_weight_decay():
    """Kc >= ℓ_γ'(0)-scale: the margin never pays for its norm, every logit is 0, F* = ℓ_γ(0)."""
    from analysis.theory import focal_data_loss, focal_etf

    t = focal_etf(4, 5, 6, 1.0, 1.0, 2.0)
    assert t.predicted["W_norm_sq"] == 0.0 and t.predicted["loss"] == pytest.approx(focal_data_loss(0.0, 4, 2.0))
    assert focal_data_loss(0.0, 4, 2.0) == pytest.approx(-(0.75**2) * math.log(0.25), rel=1e-15)


# ----- the deep linear UFM under bias-free MSE (Dang et al. 2023; Súkeník et al. 2023) -------------------------
@pytest.mark.parametrize("factors", [3, 4, 6])
@pytest.mark.parametrize("a,N,lam", [(2.0, 20, 1e-3), (2.0, 20, 2e-2), (1.0, 4, 0.2), (3.0, 90, 1e-4)])
def test_deep_linear_scalar_problem_is_solved_globally(factors, a, N, lam):
    """min_{σ>=0} (1/2N)(a − σ)² + (m/2)λσ^{2/m}, non-convex for m > 2: an independent dense grid in the test."""
    from analysis.theory import deep_linear_singular_value

    grid = np.linspace(0, a, 2_000_001)
    phi = (a - grid) ** 2 / (2 * N) + factors / 2 * lam * grid ** (2 / factors)
    sigma = deep_linear_singular_value(a, N, lam, factors)
    value = (a - sigma) ** 2 / (2 * N) + factors / 2 * lam * sigma ** (2 / factors)
    assert value <= phi.min() + 1e-15 and value == pytest.approx(phi.min(), rel=1e-9, abs=1e-15)
    assert sigma == pytest.approx(grid[phi.argmin()], abs=2e-6)


def test_deep_linear_mse_is_the_one_layer_closed_form_at_depth_one_and_splits_by_class():
    """Depth 1 (two factors) is the nuclear-norm shrinkage of mse_bias_free; imbalanced counts give one scalar
    problem per class, and the factors' norms balance: λ_f‖F_f‖² is the same for every factor."""
    from analysis.theory import deep_linear_mse, deep_linear_singular_value

    for counts in ([5] * 4, [50, 20, 5, 1]):
        one, ref = deep_linear_mse(counts, 8, 8, 1, 1e-3, 2e-3, 0.0).predicted, mse_bias_free(counts, 8, 1e-3, 2e-3)
        for key in ("loss", "W_norm_sq", "H_norm_sq", "z_true"):
            assert one[key] == pytest.approx(ref.predicted[key], rel=1e-12), (counts, key)
    counts, lam = [50, 20, 5, 1], (1e-3, 2e-3, 3e-3)  # λ_W, λ_H, λ_M
    t = deep_linear_mse(counts, 8, 8, 3, *lam).predicted
    lam_bar = (lam[0] * lam[1] * lam[2] ** 2) ** 0.25
    N = sum(counts)
    sig = [deep_linear_singular_value(math.sqrt(c), N, lam_bar, 4) for c in counts]
    F = sum((math.sqrt(c) - s) ** 2 for c, s in zip(counts, sig, strict=True)) / (2 * N) + \
        2 * lam_bar * sum(s**0.5 for s in sig)
    assert t["loss"] == pytest.approx(F, rel=1e-13)
    assert t["W_norm_sq"] * lam[0] == pytest.approx(t["H_norm_sq"] * lam[1], rel=1e-13)
    assert t["M1_norm_sq"] * lam[2] == pytest.approx(t["W_norm_sq"] * lam[0], rel=1e-13)
    assert min(sig) > 0 and t["accuracy"] == 1.0
    # stronger decay: the class of one sample vanishes (its scalar problem is solved by 0), the others stay
    strong = deep_linear_mse(counts, 8, 8, 3, 8e-3, 8e-3, 8e-3).predicted
    sig = [deep_linear_singular_value(math.sqrt(c), N, 8e-3, 4) for c in counts]
    assert sig[-1] == 0.0 and min(sig[:-1]) > 0 and strong["accuracy"] == pytest.approx(75 / 76)


def test_deep_linear_mse_collapses_to_zero_under_large_weight_decay():
    from analysis.theory import deep_linear_mse

    t = deep_linear_mse([5] * 4, 8, 8, 3, 0.5, 0.5, 0.5).predicted
    assert t["loss"] == pytest.approx(0.5, rel=1e-15) and t["W_norm_sq"] == 0.0


# ----- the count-group algebra: K×K quantities from G×G ones (issue 24) --------------------------------------------
def random_group_matrix(rng, m, zero_within=()):
    """A random GroupMatrix with group sizes m (within-group parts of the groups `zero_within` set to 0)."""
    from analysis.theory import GroupMatrix

    G = len(m)
    b = rng.normal(size=G)
    b[list(zero_within)] = 0.0
    return GroupMatrix(rng.normal(size=(G, G)), b, m)


def dense_groups(m):
    """class_group of classes in group order: group g holds classes sum(m[:g]) … sum(m[:g+1]) − 1."""
    return np.repeat(np.arange(len(m)), m)


def test_group_matrix_algebra_is_the_dense_algebra():
    """Q B Qᵀ + Σ b_g P_g (analysis.theory.GroupMatrix) against the K×K matrices it stands for: products, sums,
    transposes, entries, norms, traces, singular values (those of B and |b_g| m_g − 1 times), the square roots
    (XᵀX)^{1/2}, (XXᵀ)^{1/2}, and the normalized Gram and ETF distances of analysis.metrics."""
    from analysis.metrics import gram_distance
    from analysis.theory import GroupMatrix

    rng = np.random.default_rng(3)
    m = np.array([4, 1, 3, 2, 1])
    cg = dense_groups(m)
    X, Y = random_group_matrix(rng, m), random_group_matrix(rng, m)
    A, B = X.dense(cg), Y.dense(cg)
    K = len(cg)
    for got, want in (((X @ Y).dense(cg), A @ B), ((X + Y).dense(cg), A + B), ((X - Y).dense(cg), A - B),
                      ((2.5 * X).dense(cg), 2.5 * A), (X.T.dense(cg), A.T),
                      (X.abs_right().dense(cg), _psd_sqrt(A.T @ A)), (X.abs_left().dense(cg), _psd_sqrt(A @ A.T)),
                      (GroupMatrix.ones(m).dense(cg), np.ones((K, K))), (GroupMatrix.identity(m).dense(cg), np.eye(K))):
        assert np.abs(got - want).max() < 1e-12
    assert X.frobenius() == pytest.approx(np.linalg.norm(A), rel=1e-14)
    assert X.trace() == pytest.approx(np.trace(A), rel=1e-13)
    assert np.allclose(np.sort(X.singular_values(expand=True)), np.sort(np.linalg.svd(A, compute_uv=False)),
                       rtol=0, atol=1e-13)
    assert X.K == K and len(X.singular_values(expand=True)) == K
    S = X @ X.T  # a Gram: cosines within groups, distances
    assert X.distance(Y) == pytest.approx(gram_distance(A, B), abs=1e-14)
    assert S.etf_distance() == pytest.approx(etf_distance(A @ A.T), abs=1e-14)
    G = A @ A.T
    cos = G / np.sqrt(np.outer(np.diag(G), np.diag(G)))
    want = [cos[np.flatnonzero(cg == g)[0], np.flatnonzero(cg == g)[1]] if m[g] > 1 else np.nan for g in range(len(m))]
    assert np.allclose(S.group_cosines(), want, atol=1e-14, equal_nan=True)
    own, group = X.entries()
    assert np.allclose(GroupMatrix.from_entries(own, np.diag(group), group, m).dense(cg), A, atol=1e-14)


def _psd_sqrt(A):
    w, V = np.linalg.eigh((A + A.T) / 2)
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T


@pytest.mark.parametrize("seed, zero_within, bias", [(0, (), False), (1, (0, 2), True), (2, (0, 2, 3), False),
                                                     (3, (), True)])
def test_factorize_groups_equals_the_dense_factorization(seed, zero_within, bias):
    """analysis.theory.factorize_groups (no K×K array) predicts what factorize_logits predicts from the dense
    K×K logits, key for key, to 1e-12; its Grams are the dense ones; groups whose within-group part is 0 are the
    collapsed ones (their classes' classifiers coincide in the dense W)."""
    from analysis.theory import factorize_groups

    rng = np.random.default_rng(seed)
    m = np.array([3, 1, 4, 2])
    n = np.array([9.0, 7.0, 2.0, 1.0])
    cg = dense_groups(m)
    X = random_group_matrix(rng, m, zero_within)
    b = rng.normal(size=4) if bias else np.zeros(4)
    grouped = factorize_groups(X, b, n, 1e-2, 4e-2, loss=0.3)
    dense = factorize_logits(X.dense(cg), b[cg], n[cg], 1e-2, 4e-2, loss=0.3)
    assert grouped.rank == dense.rank and list(grouped.predicted) == list(dense.predicted)
    for key, value in dense.predicted.items():
        assert grouped.predicted[key] == pytest.approx(value, rel=1e-12, abs=1e-13), key
    for key in ("W", "means"):
        assert np.abs(grouped.grams[key].dense(cg) - dense.grams[key]).max() < 1e-12
    assert np.abs(grouped.grams["features"].dense(cg) - dense.features @ dense.features.T).max() < 1e-12
    assert grouped.collapsed.tolist() == [(m[g] > 1 and g in zero_within) for g in range(4)]
    for g in np.flatnonzero(grouped.collapsed):  # identical classifiers in the dense factor
        rows = dense.W[cg == g]
        assert np.abs(rows - rows[0]).max() < 1e-12


def test_closed_forms_above_the_gram_cap_are_the_dense_ones(monkeypatch):
    """Above GRAMS_MAX_K the closed forms predict the same numbers from the count groups, and omit the K×K Grams
    (here the cap is lowered to 1 so that the dense values are at hand)."""
    import analysis.theory as theory

    cases = [lambda: mse_bias_free([40, 40, 10, 10, 10, 3], 8, 2e-3, 2e-3),
             lambda: mse_free_bias_counts([50, 20, 20, 5, 5, 5], 8, 1e-3, 3e-3),
             lambda: mse_free_bias_counts([9, 9, 1, 1, 1, 4], 8, 3e-2, 3e-2),
             lambda: theory.mse_regularized_bias(5, 4, 8, 1e-2, 1e-2, 50.0),
             lambda: ce_etf(5, 4, 8, 1e-3, 1e-3), lambda: theory.focal_etf(4, 5, 8, 5e-3, 5e-3, 2.0)]
    for case in cases:
        dense = case()
        monkeypatch.setattr(theory, "GRAMS_MAX_K", 1)
        grouped = case()
        monkeypatch.setattr(theory, "GRAMS_MAX_K", 1000)
        assert dense.grams and not grouped.grams and set(grouped.predicted) == set(dense.predicted), dense.name
        for key, value in dense.predicted.items():
            assert grouped.predicted[key] == pytest.approx(value, rel=1e-12, abs=1e-13), (dense.name, key)


def test_seli_in_the_count_group_algebra():
    """seli_group_grams equals seli_grams (both Grams, 1e-12), and gram_distance_grouped(V, R) equals
    gram_distance(VVᵀ, R) for K×d rows V without the K×K matrix."""
    from analysis.metrics import gram_distance
    from analysis.theory import class_groups, gram_distance_grouped, seli_group_grams

    counts = [20, 5, 20, 2, 5, 20, 7]
    _, _, cg = class_groups(counts)
    dense, grouped = seli_grams(counts), seli_group_grams(counts)
    V = np.random.default_rng(0).normal(size=(len(counts), 4))
    for key in ("W", "means"):
        assert np.abs(grouped[key].dense(cg) - dense[key]).max() < 1e-12
        assert gram_distance_grouped(V, grouped[key], cg) == pytest.approx(gram_distance(V @ V.T, dense[key]),
                                                                           abs=1e-12)
