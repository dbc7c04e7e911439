"""Certified optima (analysis.certificate, DESIGN §5.5): the first-order solver ends with a primal value and
a dual lower bound within 1e-9 of each other; the lower bound lies below the objective of an independent
UFM run (written here) everywhere on a grid of weight decays from 1e-10 to 0.1, and the certified value
equals every closed form; cvxpy agrees where it runs; the count-group program equals the general one."""

import math

import numpy as np
import pytest
import torch

from analysis.certificate import (
    CERTIFIED_RTOL,
    MAX_ITER,
    Certificate,
    initial_point,
    nuclear_norm_certificate,
    solve,
    solve_cvxpy,
)
from analysis.nuclear_program import CustomLoss, NuclearProgram
from analysis.theory import ce_etf, group_collapse_threshold, mse_bias_free, mse_free_bias_counts, mse_regularized_bias
from tests.custom_losses import ce_conjugate, ce_loss, mse_conjugate, mse_loss, sq_hinge, sq_hinge_conjugate

LAMBDAS = [1e-10, 1e-8, 1e-4, 1e-1]
COUNTS = {"balanced": (5, 5, 5, 5), "imbalanced": (6, 6, 2, 2)}
SMOOTHING = 0.2


def soft_targets(K):
    """Soft labels of the tree balanced:2,2 with β = 3 (targets softmax(−β·LCA height / tree height))."""
    D = np.array([[0, 1, 2, 2], [1, 0, 2, 2], [2, 2, 0, 1], [2, 2, 1, 0]]) / 2.0
    T = np.exp(-3.0 * D)
    return T / T.sum(1, keepdims=True)


def ufm_run(counts, loss, lam, bias, steps=100):
    """An independent UFM 'run': float64 L-BFGS on F(W, H, b) = (1/N)Σℓ + λ/2(‖W‖² + ‖H‖²), d = K + 2."""
    K = len(counts)
    y = torch.repeat_interleave(torch.arange(K), torch.tensor(counts))
    g = torch.Generator().manual_seed(0)
    W = (0.3 * torch.randn(K, K + 2, generator=g, dtype=torch.float64)).requires_grad_()
    H = (0.3 * torch.randn(len(y), K + 2, generator=g, dtype=torch.float64)).requires_grad_()
    b = torch.zeros(K, dtype=torch.float64, requires_grad=bias)
    T = {"mse": torch.eye(K, dtype=torch.float64), "ce": torch.eye(K, dtype=torch.float64),
         "ls": (1 - SMOOTHING) * torch.eye(K, dtype=torch.float64) + SMOOTHING / K,
         "soft": torch.tensor(soft_targets(K))}[loss][y]

    def F():
        Z = H @ W.T + b
        data = 0.5 * ((Z - T) ** 2).sum(1) if loss == "mse" else torch.logsumexp(Z, 1) - (T * Z).sum(1)
        return data.mean() + lam / 2 * (W.square().sum() + H.square().sum())

    opt = torch.optim.LBFGS([W, H, b] if bias else [W, H], max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=0, tolerance_change=0)

    def closure():
        opt.zero_grad()
        v = F()
        v.backward()
        return v

    opt.step(closure)
    with torch.no_grad():
        return float(F())


def closed_form(counts, loss, lam, bias):
    K, n = len(counts), counts[0]
    balanced = len(set(counts)) == 1
    if loss == "mse":
        return (mse_free_bias_counts(counts, K, lam, lam) if bias else mse_bias_free(counts, K, lam, lam)).predicted
    if loss in ("ce", "ls") and balanced:
        return ce_etf(K, n, K, lam, lam, SMOOTHING if loss == "ls" else 0.0).predicted
    return None


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "free-bias"])
@pytest.mark.parametrize("loss", ["ce", "ls", "mse", "soft"])
@pytest.mark.parametrize("counts", COUNTS.values(), ids=COUNTS.keys())
@pytest.mark.parametrize("lam", LAMBDAS)
def test_certified_below_the_run_and_equal_to_the_closed_form(lam, counts, loss, bias):
    opt = nuclear_norm_certificate(counts, loss, lam, lam, 0.0, bias, smoothing=SMOOTHING,
                                   soft_targets=soft_targets(4) if loss == "soft" else None)
    cert = opt.certificate
    assert cert.certified and cert.rel_gap <= CERTIFIED_RTOL, cert.to_dict()
    # weak duality against a UFM trained here: F(run) >= F* >= lower (to rounding, 1e-12 relative)
    assert cert.lower <= ufm_run(counts, loss, lam, bias) * (1 + 1e-12)
    predicted = closed_form(counts, loss, lam, bias)
    if predicted is not None:
        assert cert.lower <= predicted["loss"] * (1 + 1e-12) and cert.upper >= predicted["loss"] * (1 - 1e-12)
        assert cert.upper == pytest.approx(predicted["loss"], rel=1e-9)
        for key in ("W_norm_sq", "H_norm_sq"):  # the geometry, not only the value
            assert opt.predicted[key] == pytest.approx(predicted[key], rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("lam", [1e-4, 1e-2])
@pytest.mark.parametrize("wd_b", [1e-3, 2.0])
def test_regularized_bias_matches_its_closed_form(lam, wd_b):
    K, n = 4, 5
    opt = nuclear_norm_certificate([n] * K, "mse", lam, lam, wd_b, True)
    assert opt.certificate.certified
    predicted = mse_regularized_bias(K, n, K, lam, lam, wd_b).predicted
    assert opt.value == pytest.approx(predicted["loss"], rel=1e-9)
    # the point is as accurate as a value at rounding allows: ~√(1e-16·F*/λ_b), here ~1e-9 absolute
    assert opt.predicted["b_mean"] == pytest.approx(predicted["b_mean"], rel=1e-6, abs=1e-9)


CVXPY_CASES = [((5, 5, 5), "ce", 1e-3, False, 0.0), ((6, 4, 2), "ce", 1e-2, True, 0.0),
               ((6, 4, 2), "ls", 1e-3, False, 0.0), ((6, 4, 2), "mse", 1e-2, True, 0.5),
               ((6, 4, 2), "soft", 1e-2, True, 0.0), ((8, 8, 3, 3, 1), "ce", 1e-4, False, 0.0)]


@pytest.mark.parametrize("counts,loss,lam,bias,wd_b", CVXPY_CASES)
def test_cvxpy_cross_check_agrees(counts, loss, lam, bias, wd_b):
    """Clarabel on the general K×K program against the first-order solver on the count-group program:
    the same value to 1e-8, and each one's dual bound below the other's value."""
    K = len(counts)
    T = np.full((K, K), 0.1 / (K - 1)) + np.eye(K) * (0.9 - 0.1 / (K - 1)) if loss == "soft" else None
    kw = dict(smoothing=SMOOTHING, soft_targets=T)
    ours = solve(NuclearProgram.from_counts(counts, loss, lam, lam, wd_b, bias, **kw)).certificate
    general = NuclearProgram.from_counts(counts, loss, lam, lam, wd_b, bias, grouped=False, **kw)
    theirs = solve_cvxpy(general).certificate
    assert ours.certified
    assert theirs.upper == pytest.approx(ours.upper, rel=1e-8)
    assert theirs.lower <= ours.upper * (1 + 1e-12) and ours.lower <= theirs.upper * (1 + 1e-12)


def test_grouped_program_equals_the_general_program():
    """Block symmetry: the optimum of 30 classes of 40 and 20 of 8 solved as a 2×2 program equals the
    50×50 one (and each is certified by its own dual bound)."""
    counts = [40] * 30 + [8] * 20
    grouped = solve(NuclearProgram.from_counts(counts, "ce", 1e-5, 1e-5, 0.0, True))
    general = solve(NuclearProgram.from_counts(counts, "ce", 1e-5, 1e-5, 0.0, True, grouped=False))
    assert grouped.program.G == 2 and general.program.G == 50
    assert grouped.certificate.certified and general.certificate.certified
    assert grouped.certificate.upper == pytest.approx(general.certificate.upper, rel=1e-12)
    X_g, b_g = grouped.program.dense(grouped.point)
    X, b = general.program.dense(general.point)
    assert np.allclose(X_g, X, atol=1e-6 * np.abs(X).max())


def test_grouped_program_costs_the_same_at_ten_thousand_classes():
    """K = 10 and K = 10 000 with the same two count groups are both 2×2 programs."""
    for scale in (1, 1000):
        sol = solve(NuclearProgram.from_counts([100] * 7 * scale + [10] * 3 * scale, "ce", 1e-5, 1e-5))
        assert sol.program.K == 10 * scale and sol.program.G == 2
        assert sol.certificate.certified and sol.certificate.iterations < 2000


def test_a_point_off_the_optimum_is_not_certified():
    """The certificate is the pair (value, dual bound), not the solver's word: 1 % off the closed-form
    optimum, the bound from that point does not close the gap."""
    prog = NuclearProgram.from_counts([5] * 4, "ce", 1e-4, 1e-4)
    p = initial_point(prog)  # the closed form (Zhu et al. 2021)
    off = p.combine(p, 1.01, 0.0)
    cert = Certificate(prog.objective(off), prog.dual_bound(off), "perturbed", 0, 0.0)
    assert not cert.certified and cert.rel_gap > 1e-6
    assert cert.lower <= ce_etf(4, 5, 4, 1e-4, 1e-4).predicted["loss"]
    inconsistent = Certificate(1.0, 1.0 + 1e-9, "inconsistent", 0, 0.0)  # a bound above the value
    assert not inconsistent.certified


def test_a_solver_stopped_early_reports_not_certified():
    sol = solve(NuclearProgram.from_counts([100] * 7 + [10] * 3, "ce", 1e-5, 1e-5, 0.0, True), max_iter=3)
    assert not sol.certificate.certified and sol.certificate.lower < sol.certificate.upper


@pytest.mark.parametrize("loss, bias", [("ce", True), ("ce", False), ("mse", True)])
def test_after_a_full_solve_a_point_off_the_optimum_has_its_honest_gap(loss, bias):
    """A solver that ran to completion (imbalanced counts: it iterates; a free bias: the dual bound's projection)
    still reports a real pair: its gap is positive, not 0 (also when stopped at tol=1e-6: 1e-8 to 1e-6 there),
    and its lower bound lies below an independent run;
    and at the optimum scaled by 0.99 and by 1.01 the certificate that `solve` reports from there (max_iter=0)
    is (F(off), dual bound at off), not certified, its lower bound below F* and its gap at least F(off) − F*,
    which is 2.5e-4 to 8.4e-4 of F* here (the second-order rise of F along the ray through the optimum)."""
    counts, lam = (6, 6, 2, 2), 1e-3 if loss == "ce" else 1e-2
    prog = NuclearProgram.from_counts(counts, loss, lam, lam, 0.0, bias)
    sol = solve(prog)
    full = sol.certificate
    assert full.certified and full.iterations > 0 and full.solver == "fista"
    assert 0 < full.gap <= CERTIFIED_RTOL * full.upper and full.lower < full.upper
    assert full.lower <= ufm_run(counts, loss, lam, bias) * (1 + 1e-12)
    loose = solve(prog, tol=1e-6).certificate  # completed by its own gap rule, well above rounding
    assert 1e-10 < loose.rel_gap <= 1e-6 and loose.lower < full.upper * (1 + 1e-12) <= loose.upper * (1 + 2e-12)
    for scale in (0.99, 1.01):
        off = sol.point.combine(sol.point, scale, 0.0)
        cert = solve(prog, start=off, max_iter=0).certificate
        assert (cert.upper, cert.lower, cert.iterations) == (prog.objective(off), prog.dual_bound(off), 0)
        margin = cert.upper - full.upper  # F(off) − F*, to the full solve's 1e-9
        assert 2.5e-4 < margin / full.upper < 1e-3, scale
        assert cert.lower <= full.upper * (1 + 1e-12)  # weak duality at any point
        assert cert.gap >= margin * (1 - 1e-6) and cert.rel_gap > 2.5e-4 and not cert.certified, scale


@pytest.mark.minutes
def test_thousand_classes_general_program_equals_the_grouped_one():
    """700 classes of 100 and 300 of 10, λ = 1e-5 (minutes on 2 CPU cores): the 1000×1000 program is
    certified to 1e-9 and equals the 2×2 block-symmetric program to 1e-8."""
    counts = [100] * 700 + [10] * 300
    general = solve(NuclearProgram.from_counts(counts, "ce", 1e-5, 1e-5, grouped=False))
    grouped = solve(NuclearProgram.from_counts(counts, "ce", 1e-5, 1e-5))
    assert general.certificate.rel_gap <= 1e-9 and grouped.certificate.rel_gap <= 1e-9
    assert math.isclose(general.certificate.upper, grouped.certificate.upper, rel_tol=1e-8)


# ----- custom losses ----------------------------------------------------------------------------------------
CUSTOM_BIASES = [(False, 0.0), (True, 0.0), (True, 0.3)]
CUSTOM_IDS = ["no-bias", "free-bias", "reg-bias"]


@pytest.mark.parametrize("bias,wd_b", CUSTOM_BIASES, ids=CUSTOM_IDS)
@pytest.mark.parametrize("counts", [(4, 4, 4), (5, 5, 2)], ids=["balanced", "imbalanced"])
def test_custom_mse_certifies_the_builtin_value(counts, bias, wd_b):
    """MSE as a CustomLoss (general program, autograd, the user's conjugate) is certified and has the
    certified value of the built-in "mse" (count-group program) to 1e-10 (measured ≤ 1e-12: the custom
    value includes the rounding allowance for the user's functions, ~1e-12 of it here)."""
    mine = nuclear_norm_certificate(counts, CustomLoss("my-mse", mse_loss, mse_conjugate), 1e-3, 1e-3, wd_b, bias)
    ref = nuclear_norm_certificate(counts, "mse", 1e-3, 1e-3, wd_b, bias)
    assert mine.certificate.certified and ref.certificate.certified, mine.certificate.to_dict()
    assert mine.value == pytest.approx(ref.value, rel=1e-10)
    assert "conjugate supplied" in mine.certificate.note and ref.certificate.note == ""
    assert mine.rank == ref.rank and mine.predicted["W_norm_sq"] == pytest.approx(ref.predicted["W_norm_sq"], rel=1e-6)


@pytest.mark.parametrize("shift_invariant,bias,wd_b", [(True, False, 0.0), (True, True, 0.0), (True, True, 0.3),
                                                       (False, False, 0.0)],
                         ids=["no-bias", "free-bias", "reg-bias", "no-bias-undeclared"])
def test_custom_ce_certifies_the_builtin_value(shift_invariant, bias, wd_b):
    """CE as a CustomLoss with its conjugate (negative entropy on the shifted simplex) is certified and
    has the built-in "ce" value to 1e-9 (measured ≤ 6e-14), whether or not the shift invariance is
    declared (it only restricts the iterates to X1 = 0)."""
    counts = (5, 5, 2)
    my_ce = CustomLoss("my-ce", ce_loss, ce_conjugate, shift_invariant=shift_invariant)
    mine = nuclear_norm_certificate(counts, my_ce, 1e-2, 1e-2, wd_b, bias).certificate
    ref = nuclear_norm_certificate(counts, "ce", 1e-2, 1e-2, wd_b, bias).certificate
    assert mine.certified and ref.certified, mine.to_dict()
    assert mine.upper == pytest.approx(ref.upper, rel=1e-9)
    assert mine.lower <= ref.upper * (1 + 1e-12) and ref.lower <= mine.upper * (1 + 1e-12)  # weak duality across


@pytest.mark.parametrize("bias,wd_b", CUSTOM_BIASES[:2], ids=CUSTOM_IDS[:2])
def test_custom_loss_without_conjugate_is_an_upper_bound_never_certified(bias, wd_b):
    """The squared hinge without a conjugate: the solver runs and stops (stalled primal value), returns a
    finite value below that of X = 0, b = 0 (Σ_{j≠y} 1 = K − 1) — but no lower bound, so not certified,
    and the note says why. With its conjugate the same loss is certified, and the unproven value lies
    between that certificate's bounds to rounding (weak duality) and equals its value to 1e-9."""
    counts, lam = (5, 5, 2), 1e-3
    plain = nuclear_norm_certificate(counts, CustomLoss("sq-hinge", sq_hinge), lam, lam, wd_b, bias)
    cert = plain.certificate
    assert not cert.certified and cert.lower == -math.inf and math.isfinite(cert.upper)
    assert cert.rel_gap == math.inf and cert.to_dict()["certified"] is False
    assert "no conjugate given" in cert.note and "not certified" in cert.note
    assert "fell by less than" in cert.note and cert.iterations < MAX_ITER
    zero = NuclearProgram.from_counts(counts, CustomLoss("sq-hinge", sq_hinge), lam, lam, wd_b, bias)
    assert zero.objective(initial_point(zero)) == pytest.approx(len(counts) - 1, rel=1e-15)  # X = 0, b = 0
    assert cert.upper <= len(counts) - 1
    dual = nuclear_norm_certificate(counts, CustomLoss("sq-hinge", sq_hinge, sq_hinge_conjugate, shift_invariant=True),
                                    lam, lam, wd_b, bias).certificate
    assert dual.certified
    assert dual.lower <= cert.upper * (1 + 1e-12)
    assert cert.upper == pytest.approx(dual.upper, rel=1e-9)


def test_custom_loss_without_conjugate_stopped_by_max_iter_says_so():
    sol = solve(NuclearProgram.from_counts((5, 5, 2), CustomLoss("sq-hinge", sq_hinge), 1e-3, 1e-3), max_iter=3)
    assert sol.certificate.iterations == 3 and not sol.certificate.certified
    assert "max_iter reached" in sol.certificate.note


@pytest.mark.parametrize("conjugate", [None, lambda U, y: (U**2).sum(1) / 4])
def test_a_custom_loss_whose_optimum_is_zero_ends_with_a_reason(conjugate):
    """ℓ = ‖z‖², F* = 0 at X = 0: the relative gap (upper − lower)/|upper| is undefined there (it was a
    ZeroDivisionError); the solver stops, certifies nothing, and with a conjugate says why."""
    opt = nuclear_norm_certificate((3, 2), CustomLoss("sq", lambda Z, y: (Z**2).sum(1), conjugate), 1e-2, 1e-2)
    c = opt.certificate
    assert not c.certified and 0 < c.upper < 1e-14 and opt.value == c.upper
    if conjugate is None:
        assert c.lower == -math.inf and "no conjugate given" in c.note
    else:
        assert -1e-14 < c.lower < 0 and "the primal value is 0, where a relative gap" in c.note


def test_cvxpy_refuses_custom_losses():
    with pytest.raises(ValueError, match="built-in losses only"):
        nuclear_norm_certificate((5, 5, 2), CustomLoss("my-mse", mse_loss, mse_conjugate), 1e-3, 1e-3, solver="cvxpy")


@pytest.mark.parametrize("lam, certified", [(1e-6, True), (1e-8, False)])
def test_custom_loss_rounding_allowance_keeps_the_certificate_honest(lam, certified):
    """A user's CE written lse(z) − z_y errs by ~ε·|z_y| ~ 1e-15, which near interpolation (F* ~ 1e-7 at
    λ = 1e-8) is 1e-8 of the value: without the rounding allowance its pair came out 7e-10 apart while
    the true optimum (the built-in, precise CE) lay 1.4e-9 below its lower value — a false certificate.
    With it, both values bracket the true optimum, and λ = 1e-8 is not certified."""
    counts = (5, 5, 2)
    truth = nuclear_norm_certificate(counts, "ce", lam, lam).certificate
    assert truth.certified
    mine = nuclear_norm_certificate(counts, CustomLoss("my-ce", ce_loss, ce_conjugate, True), lam, lam).certificate
    assert mine.certified is certified, mine.to_dict()
    assert mine.lower <= truth.lower and mine.upper >= truth.upper


# ----- the certificate at scale: the count-group form, no K×K array (issue 24) --------------------------------------
@pytest.mark.parametrize("counts,loss,bias,wd_b", [((6, 6, 2, 2), "ce", False, 0.0),
                                                   ((7, 7, 7, 3, 3, 1), "ls", True, 0.0),
                                                   ((7, 7, 7, 3, 3, 1), "mse", True, 0.3),
                                                   ((9, 9, 4, 4, 4), "mse", False, 0.0)])
def test_above_the_cap_the_optimum_is_read_from_the_count_groups(monkeypatch, counts, loss, bias, wd_b):
    """With the dense cap lowered below K, `factorize` builds no K×K array (class_logits, W, features None, no
    grams, a note why) and its predictions, read from the G×G form (analysis.theory.factorize_groups), equal the
    dense factorization's to 1e-12, as do the rank and the collapsed groups."""
    import analysis.certificate as certificate

    lam = 1e-3
    dense = nuclear_norm_certificate(counts, loss, lam, lam, wd_b, bias, smoothing=SMOOTHING)
    monkeypatch.setattr(certificate, "GRAMS_MAX_K", 2)
    grouped = nuclear_norm_certificate(counts, loss, lam, lam, wd_b, bias, smoothing=SMOOTHING)
    assert dense.W is not None and dense.grams and dense.grams_note == ""
    assert grouped.W is None and grouped.features is None and grouped.class_logits is None and not grouped.grams
    assert "not built" in grouped.grams_note
    with pytest.raises(ValueError, match="not built"):
        grouped.H([0])
    assert grouped.rank == dense.rank and list(grouped.predicted) == list(dense.predicted)
    for key, value in dense.predicted.items():
        assert grouped.predicted[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert np.allclose(grouped.b, dense.b, rtol=0, atol=1e-15)
    assert grouped.group_collapsed() == dense.group_collapsed()
    # the dense optimum's Grams are the count-group ones
    cg = dense.class_group
    assert np.abs(dense.groups.grams["W"].dense(cg) - dense.grams["W"]).max() < 1e-10 * np.abs(dense.grams["W"]).max()


@pytest.mark.parametrize("loss,bias,wd_b,smoothing", [("ce", False, 0.0, 0.0), ("ce", True, 0.0, 0.0),
                                                      ("ls", False, 0.0, 0.2), ("mse", True, 0.0, 0.0),
                                                      ("mse", True, 0.5, 0.0)])
@pytest.mark.parametrize("counts,lam", [([400] * 3 + [40] * 3 + [4] * 4, 3e-3), ([1000] * 7 + [10] * 3, 5e-4),
                                        ([50, 30, 30, 12, 12, 12, 3, 3, 3, 3, 1], 1.5e-2)])
def test_certified_collapse_agrees_with_the_closed_form_threshold(loss, bias, wd_b, smoothing, counts, lam):
    """The groups whose within-group singular value d_g is 0 at the certified optimum are exactly those of
    analysis.theory.group_collapse_threshold (margin·√n_g <= N·√(λ_Wλ_H); margin 1 for CE, 1 − α for LS, 1 for
    MSE), with and without a bias: the derivation of the threshold, checked against the program."""
    opt = nuclear_norm_certificate(counts, loss, lam, lam, wd_b, bias, smoothing=smoothing)
    assert opt.certificate.certified
    margin = 1 - smoothing if loss == "ls" else 1.0
    closed = {float(c): v for c, v in group_collapse_threshold(counts, lam, lam, margin).items()}
    assert opt.group_collapsed() == closed
    assert 0 < sum(closed.values()) < len(closed)  # both kinds of group in every case


def test_a_zipf_vocabulary_of_32768_classes_is_certified_on_its_count_groups():
    """`zipf:1:1000` at K = 32 768 (N = 39 217), CE, λ = 5e-4: 62 distinct counts, so a 62×62 program, certified
    in seconds (measured 11 s on 2 busy cores); no K×K array is built (a K×K float64 matrix would be 8.6 GB), and
    the collapsed groups are those of the closed-form threshold."""
    from ufm.counts import zipf_counts

    counts = zipf_counts(32768, 1, 1000)
    opt = nuclear_norm_certificate(counts, "ce", 5e-4, 5e-4)
    assert len(opt.group_counts) == 62 and opt.b.shape == (32768,)
    assert opt.certificate.certified and opt.W is None and not opt.grams
    closed = {float(c): v for c, v in group_collapse_threshold(counts, 5e-4, 5e-4).items()}
    assert opt.group_collapsed() == closed and all(closed.values())
    assert {"loss", "W_norm_sq", "H_norm_sq", "z_true", "z_other", "logit_gap", "nc2"} <= set(opt.predicted)
    assert opt.predicted["W_norm_sq"] == pytest.approx(opt.predicted["H_norm_sq"], rel=1e-12)  # λ_W = λ_H
