"""One test per theorem of DESIGN §5.2, asserted numerically in float64.

A UFM optimized to convergence (L-BFGS, float64) is compared with each closed form of analysis.theory
and with the convex program of analysis.convex (the global-optimality certificate)."""

import math

import numpy as np
import pytest
import torch

import ufm
from analysis import symbolic
from analysis.convex import critical_ratios, minority_collapse, nuclear_norm_certificate
from analysis.theory import (
    ce_etf,
    lemma1_square_loss,
    mse_bias_free,
    mse_free_bias,
    mse_regularized_bias,
    simplex_etf,
    sqi_classifier,
    sqi_classifier_norm_sq,
    stationary_norm_identity,
)
from ufm.config import ConfigError, SimConfig
from ufm.errors import python_names
from ufm.fit.optimizers import make_optimizer
from ufm.model import init_params, logits, objective_and_grad
from ufm.problem import resolve

# three (K, n, λ) settings; d = K + 2 leaves room for every geometry
SETTINGS = [(3, 4, 1e-2), (4, 5, 5e-3), (6, 3, 2e-3)]


def ufm_optimum(tmp_path, **kw):
    """The end point of a float64 L-BFGS run, with its summary (closed form and certificate)."""
    K = kw.get("K", 4)
    cfg = SimConfig.from_dict(dict(d=K + 2, optimizer="lbfgs", dtype="float64", steps=1500, **kw))
    return ufm.run(cfg, tmp_path / f"run-{len(list(tmp_path.iterdir()))}", progress=False).summary


def assert_matches_theory(s, name):
    assert s["theory"]["name"] == name and s["theory"]["applies"], s["theory"]
    for key in ("loss", "W_norm_sq", "H_norm_sq"):
        assert s["rel_gap"][key] < 1e-6, (key, s["rel_gap"][key])
    assert abs(s["certificate"]["rel_gap"]) < 1e-6, s["certificate"]
    # the whole geometry, not only norms: Grams of W and of the centered class means
    assert set(s["grams"]) == {"W", "means"}
    for key, g in s["grams"].items():
        assert g["rel_error"] < 1e-6, (key, g["rel_error"])


@pytest.mark.parametrize("K,n,lam", SETTINGS)
def test_mse_bias_free_shrinkage(tmp_path, K, n, lam):
    # Z = (1 − Kc)Y, F* = Kc − K²c²/2
    s = ufm_optimum(tmp_path, K=K, n=n, wd_W=lam, wd_H=lam, wd_b=lam, loss="mse")
    assert_matches_theory(s, "mse_bias_free")


@pytest.mark.parametrize("K,n,lam", SETTINGS)
def test_mse_free_bias_simplex_etf(tmp_path, K, n, lam):
    # Z = (1 − Kc)(Y − 11ᵀ/K), b = 1/K, W a simplex ETF, F* = (K−1)c(1 − Kc/2)
    s = ufm_optimum(tmp_path, K=K, n=n, wd_W=lam, wd_H=lam, wd_b=0.0, bias=True, loss="mse")
    assert_matches_theory(s, "mse_free_bias")
    assert s["final"]["nc2_W"] < 1e-6 and s["final"]["b_mean"] == pytest.approx(1 / K, rel=1e-6)


@pytest.mark.parametrize("K,n,lam", SETTINGS)
@pytest.mark.parametrize("wd_b", [1e-3, 2.0], ids=["etf-case", "common-component-case"])
def test_mse_regularized_bias_case_split(tmp_path, K, n, lam, wd_b):
    # λ_b/(1+λ_b) <= Kc keeps W an ETF (g = 0); beyond, W gains a common component (nc2_W > 0)
    s = ufm_optimum(tmp_path, K=K, n=n, wd_W=lam, wd_H=lam, wd_b=wd_b, bias=True, loss="mse")
    assert_matches_theory(s, "mse_regularized_bias")
    c = math.sqrt(n) * lam
    etf_case = wd_b / (1 + wd_b) / K <= c
    assert (s["final"]["nc2_W"] < 1e-6) == etf_case
    assert s["final"]["b_mean"] == pytest.approx(s["theory"]["predicted"]["b_mean"], rel=1e-6)


@pytest.mark.parametrize("K,n,lam", SETTINGS)
@pytest.mark.parametrize("bias", [False, True])
def test_ce_zhu_et_al_2021(tmp_path, K, n, lam, bias):
    # global minimizers: W a scaled simplex ETF, h = √(λ_W/(nλ_H))·w_y, wrong classes get probability c
    s = ufm_optimum(tmp_path, K=K, n=n, wd_W=lam, wd_H=2 * lam, wd_b=lam, bias=bias, loss="ce")
    assert_matches_theory(s, "ce_etf")
    assert s["final"]["nc2"] < 1e-6 and s["final"]["nc3"] < 1e-6
    c = math.sqrt(n * lam * 2 * lam)
    u = s["final"]["logit_gap"]
    assert math.exp(-u) / (1 + (K - 1) * math.exp(-u)) == pytest.approx(c, rel=1e-6)


@pytest.mark.parametrize("K,n,lam", SETTINGS)
def test_label_smoothing_etf(tmp_path, K, n, lam):
    s = ufm_optimum(tmp_path, K=K, n=n, wd_W=lam, wd_H=lam, wd_b=lam, loss="ls", smoothing=0.15)
    assert_matches_theory(s, "ls_etf")


@pytest.mark.parametrize("gamma", [1.0, 2.0, 5.0])
@pytest.mark.parametrize("K,n,lam", SETTINGS)
def test_focal_loss_etf(tmp_path, K, n, lam, gamma):
    """Zhou et al. (2022): under the focal loss the balanced UFM's global minimizers are simplex ETFs; the
    scale solves a one-dimensional problem (analysis.theory.focal_etf). A float64 L-BFGS run lands there."""
    s = ufm_optimum(tmp_path, K=K, n=n, wd_W=lam, wd_H=lam, wd_b=lam, loss="focal", focal_gamma=gamma)
    assert s["theory"]["name"] == "focal_etf" and s["theory"]["applies"], s["theory"]
    assert s["rel_gap"]["loss"] < 1e-10 and s["rel_gap"]["W_norm_sq"] < 1e-6 and s["rel_gap"]["H_norm_sq"] < 1e-6
    assert s["final"]["nc1"] < 1e-12 and s["final"]["nc2"] < 1e-6 and s["final"]["accuracy"] == 1.0
    assert all(g["rel_error"] < 1e-6 for g in s["grams"].values()) and set(s["grams"]) == {"W", "means"}
    assert not s["certificate"]["applies"]  # not convex in the logits: no certificate, and the summary says so


@pytest.mark.parametrize("depth,counts", [(3, (5, 5, 5, 5)), (2, (8, 6, 4, 3))])
def test_deep_linear_ufm_reaches_its_closed_form(tmp_path, depth, counts):
    """The deep linear bias-free MSE UFM (analysis.theory.deep_linear_mse: one scalar problem per class with
    penalty σ^(2/(L+1))): a float64 L-BFGS run from the default start lands on it."""
    cfg = SimConfig(counts=counts, d=8, width=8, depth=depth, loss="mse", wd=1e-3, optimizer="lbfgs",
                    dtype="float64", steps=3000, certificate=False)
    s = ufm.run(cfg, tmp_path / f"deep{depth}", progress=False).summary
    assert s["theory"]["name"] == "deep_linear_mse" and s["theory"]["applies"], s["theory"]
    assert s["rel_gap"]["loss"] < 1e-10
    for key in ["W_norm_sq", "H_norm_sq", *(f"M{l}_norm_sq" for l in range(1, depth))]:
        assert s["rel_gap"][key] < 1e-5, (key, s["rel_gap"][key])


def test_collapse_to_zero_threshold(tmp_path):
    # Kc >= 1: the optimum is W = H = 0 with F* = ½ (MSE, bias-free)
    K, n = 4, 4
    lam = 1.05 / (K * math.sqrt(n))
    s = ufm_optimum(tmp_path, K=K, n=n, wd_W=lam, wd_H=lam, wd_b=lam, loss="mse")
    assert s["final"]["loss"] == pytest.approx(0.5, rel=1e-8) and s["final"]["W_norm_sq"] < 1e-8


@pytest.mark.parametrize("loss,bias,wd_b", [("mse", False, 0), ("mse", True, 0), ("mse", True, 0.3),
                                            ("ce", False, 0), ("ls", False, 0)])
@pytest.mark.parametrize("K,n,lam", SETTINGS)
def test_convex_program_equals_closed_forms(loss, bias, wd_b, K, n, lam):
    d = K + 2
    opt = nuclear_norm_certificate([n] * K, loss, lam, lam, wd_b, bias, smoothing=0.15)
    if loss == "mse":
        target = (mse_regularized_bias(K, n, d, lam, lam, wd_b) if bias
                  else mse_bias_free([n] * K, d, lam, lam))
    else:
        target = ce_etf(K, n, d, lam, lam, 0.15 if loss == "ls" else 0.0)
    assert opt.value == pytest.approx(target.predicted["loss"], rel=1e-7)


def test_ce_free_bias_imbalanced_prediction_of_logits(tmp_path):
    # CE ignores a constant shift of the bias; the convex prediction uses the mean-zero bias that
    # gradient descent from b = 0 keeps, so logits and bias are predicted, not only the loss
    s = ufm_optimum(tmp_path, K=3, counts=(10, 10, 3), wd_W=5e-3, wd_H=5e-3, wd_b=0.0, bias=True, loss="ce")
    assert s["theory"]["name"] == "convex_optimum"
    for key in ("z_true", "z_other", "logit_gap"):
        assert s["final"][key] == pytest.approx(s["theory"]["predicted"][key], rel=1e-4), key


def test_convex_target_refused_when_d_is_below_its_rank(tmp_path):
    s = ufm_optimum(tmp_path, K=6, n=5, wd_W=5e-3, wd_H=5e-3, wd_b=5e-3, loss="ce", counts=(5, 5, 5, 5, 5, 2))
    assert s["theory"]["applies"]  # d = K + 2: reachable
    cfg = SimConfig(K=6, counts=(5, 5, 5, 5, 5, 2), d=3, wd_W=5e-3, wd_H=5e-3, wd_b=5e-3, loss="ce",
                    optimizer="lbfgs", dtype="float64", steps=200)
    s = ufm.run(cfg, tmp_path / "low-d", progress=False).summary
    assert not s["theory"]["applies"] and "lower bound" in s["theory"]["reason"]
    assert s["certificate"]["lower_bound_only"] and s["certificate"]["gap"] > 0


def test_imbalanced_certificate_and_departure_from_etf(tmp_path):
    # no closed form: the convex optimum is the target; the means are not a simplex ETF
    counts = (40, 40, 40, 4, 4)
    s = ufm_optimum(tmp_path, K=5, counts=counts, wd_W=5e-3, wd_H=5e-3, wd_b=5e-3, loss="ce")
    assert s["theory"]["name"] == "convex_optimum"
    assert abs(s["certificate"]["rel_gap"]) < 1e-6
    assert s["final"]["nc2"] > 0.1
    assert s["final"]["nc2"] == pytest.approx(s["theory"]["predicted"]["nc2"], rel=1e-4)
    assert s["grams"]["means"]["rel_error"] < 1e-4 and s["grams"]["W"]["rel_error"] < 1e-4


def test_simplex_etf_exists_iff_K_at_most_d_plus_1():
    assert simplex_etf(4, 3).applies and not simplex_etf(5, 3).applies
    assert "spherical code" in simplex_etf(5, 3).reason


@pytest.mark.parametrize("K", [2, 3, 10])
def test_lemma1_rangamani_banburski(K):
    # NC outputs α on the true class and −α/(K−1) elsewhere never interpolate: loss >= 1/(2K) > 0
    rng = np.random.default_rng(K)
    for alpha in rng.uniform(-3, 3, size=50):
        out = np.full(K, -alpha / (K - 1))
        out[0] = alpha
        direct = 0.5 * ((out - np.eye(K)[0]) ** 2).sum()
        assert lemma1_square_loss(alpha, K) == pytest.approx(direct, rel=1e-13)
        assert lemma1_square_loss(alpha, K) >= 1 / (2 * K) - 1e-15
    assert lemma1_square_loss((K - 1) / K, K) == pytest.approx(1 / (2 * K), rel=1e-14)


def test_sqi_relations_at_a_critical_point():
    # Rangamani & Banburski: the free-bias square-loss optimum is SQI with ε = (K−1)c, and its last
    # layer satisfies w_c = ε/(λ(K−1))(μ_c − μ_G) and ‖w_c‖² = (ε − Kε²/(K−1))/(Kλ)
    K, n, lam = 4, 6, 4e-3
    cfg = SimConfig(K=K, n=n, d=6, bias=True, wd_W=lam, wd_H=lam, wd_b=0.0, optimizer="lbfgs",
                    dtype="float64", steps=1500)
    params = _optimize(cfg)
    y = resolve(cfg).labels(params["H"].device).numpy()
    F = logits(params).detach().numpy()
    H, W = params["H"].detach().numpy(), params["W"].detach().numpy()
    eps = float(np.mean(1 - F[np.arange(len(y)), y]))
    off = F[np.arange(K)[None, :] != y[:, None]]
    assert eps == pytest.approx((K - 1) * math.sqrt(n) * lam, rel=1e-8)
    assert np.allclose(off, eps / (K - 1), rtol=1e-7)
    norms = (W**2).sum(1)
    assert np.allclose(norms, sqi_classifier_norm_sq(eps, K, lam), rtol=1e-7)
    means = np.stack([H[y == k].mean(0) for k in range(K)])
    assert np.allclose(W, sqi_classifier(eps, K, lam, means - H.mean(0)), rtol=1e-6, atol=1e-9)
    assert np.allclose(norms, stationary_norm_identity(np.eye(K)[y], F, lam), rtol=1e-7)


def test_stationary_norm_identity_holds_without_sqi():
    # the general identity holds at any critical point, SQI or not (bias-free: off-class outputs are 0)
    K, n, lam = 4, 5, 4e-3
    cfg = SimConfig(K=K, n=n, d=6, wd_W=lam, wd_H=lam, optimizer="lbfgs", dtype="float64", steps=1500)
    params = _optimize(cfg)
    y = resolve(cfg).labels(params["H"].device).numpy()
    F = logits(params).detach().numpy()
    W = params["W"].detach().numpy()
    assert np.abs(F[np.arange(K)[None, :] != y[:, None]]).max() < 1e-8  # not SQI
    assert np.allclose((W**2).sum(1), stationary_norm_identity(np.eye(K)[y], F, lam), rtol=1e-7)


def _optimize(cfg):
    """L-BFGS to convergence (the loop of ufm.fit.loop without measurements or files)."""
    device = torch.device("cpu")
    problem = resolve(cfg)
    params = init_params(problem, device, torch.float64)
    y = problem.labels(device)
    opt = make_optimizer(cfg, params)
    for _ in range(cfg.steps):
        opt.step(lambda: objective_and_grad(params, y, problem)[0])
        if opt.stalled:
            break
    return params


def test_layer_peeled_minority_collapse():
    # Fang et al. 2021: balanced → simplex ETF (cos = −1/(K−1)); the minority cosine rises with the
    # imbalance ratio and reaches 1 (parallel minority classifiers)
    r = minority_collapse([1, 10, 100, 1000], K_A=7, K_B=3)
    cos = r["minority_cosine"]
    assert cos[0] == pytest.approx(-1 / 9, abs=1e-5)
    assert np.all(np.diff(cos) > 0) and cos[-1] > 1 - 1e-4
    crit = critical_ratios(K_A=7, K_B=3)
    assert 100 < crit["parallel"] < 1000
    # small budgets: the minority classifiers vanish (their cosine is then undefined, NaN)
    small = minority_collapse([1, 4], K_A=7, K_B=3, E_W=1.0, E_H=1.0)
    assert small["minority_norm_ratio"][1] < 1e-3 and np.isnan(small["minority_cosine"][1])


@pytest.mark.parametrize("K,n,lam", SETTINGS)
def test_symbolic_forms_equal_numeric_forms(K, n, lam):
    d = K + 2
    f = symbolic.as_function
    assert f(symbolic.mse_bias_free_loss(), "K", "n", "wd_W", "wd_H")(K, n, lam, 2 * lam) == pytest.approx(
        mse_bias_free([n] * K, d, lam, 2 * lam).predicted["loss"], rel=1e-12)
    assert f(symbolic.mse_free_bias_loss(), "K", "n", "wd_W", "wd_H")(K, n, lam, 2 * lam) == pytest.approx(
        mse_free_bias(K, n, d, lam, 2 * lam).predicted["loss"], rel=1e-12)
    ce = symbolic.ce_etf()
    num = ce_etf(K, n, d, lam, 2 * lam).predicted
    for key, sym in (("loss", "loss"), ("W_norm_sq", "W_norm_sq"), ("logit_gap", "u")):
        assert f(ce[sym], "K", "n", "wd_W", "wd_H")(K, n, lam, 2 * lam) == pytest.approx(num[key], rel=1e-12)
    assert f(ce["p_wrong"], "K", "n", "wd_W", "wd_H")(K, n, lam, 2 * lam) == pytest.approx(math.sqrt(2 * n) * lam)
    rb = symbolic.mse_regularized_bias()
    assert f(rb["a"]["a"], "K", "n", "wd_W", "wd_H")(K, n, lam, lam) == pytest.approx(1 - K * math.sqrt(n) * lam)
    for wd_b in (1e-3, 2.0):
        args = (K, n, lam, lam, wd_b)
        etf_case = f(rb["etf"]["condition"], "K", "n", "wd_W", "wd_H", "wd_b")(*args) <= 0
        # the two cases are complementary: the g of the "common" solution is positive exactly outside
        assert (f(rb["common"]["g"], "K", "n", "wd_W", "wd_H", "wd_b")(*args) > 0) == (not etf_case)
        value = f(rb["etf" if etf_case else "common"]["loss"], "K", "n", "wd_W", "wd_H", "wd_b")(*args)
        assert value == pytest.approx(mse_regularized_bias(K, n, d, lam, lam, wd_b).predicted["loss"], rel=1e-12)
    lem = symbolic.lemma1()
    assert float(lem["minimum"].subs(symbolic.K, K)) == pytest.approx(1 / (2 * K))
    sqi = f(symbolic.sqi_norm_sq(), "eps", "K", "wd")
    assert sqi(0.07, K, lam) == pytest.approx(sqi_classifier_norm_sq(0.07, K, lam), rel=1e-13)


def test_nonnegative_features_reach_the_bias_free_mse_optimum(tmp_path):
    """Tirer & Bruna (2022): with features ReLU(H), bias-free MSE ends at the free-feature optimum (its class
    means are orthogonal and can be taken non-negative): mse_bias_free's loss, norms and Grams."""
    s = ufm_optimum(tmp_path, K=4, n=5, wd_W=5e-3, wd_H=5e-3, wd_b=5e-3, loss="mse", features="nonneg")
    assert s["theory"]["name"] == "mse_nonneg"
    assert s["rel_gap"]["loss"] < 1e-8 and s["rel_gap"]["W_norm_sq"] < 1e-7 and s["rel_gap"]["H_norm_sq"] < 1e-7
    assert all(g["rel_error"] < 1e-4 for g in s["grams"].values())
    assert s["certificate"]["lower_bound_only"] and "non-negative" in s["certificate"]["lower_bound_reason"]


def test_nonnegative_features_under_ce_stay_above_the_free_optimum(tmp_path):
    """CE's simplex ETF needs negative cosines between class means: with ReLU(H) the run ends strictly above
    the free UFM's certified optimum (a lower bound only), with every feature non-negative and no target."""
    cfg = SimConfig(K=4, n=5, d=6, loss="ce", wd=5e-3, features="nonneg", optimizer="lbfgs", dtype="float64",
                    steps=1000)
    r = ufm.run(cfg, tmp_path / "run", progress=False)
    s = r.summary
    assert s["theory"]["name"] == "nonneg_features" and not s["theory"]["applies"]
    assert s["certificate"]["certified"] and s["certificate"]["lower_bound_only"]
    assert s["certificate"]["rel_gap"] > 0.05  # ReLU(H) cannot reach the ETF's value
    X = torch.relu(r.params["H"])
    means = torch.stack([X[r.params["H"].shape[0] // 4 * k:r.params["H"].shape[0] // 4 * (k + 1)].mean(0)
                         for k in range(4)])
    cos = torch.nn.functional.normalize(means, dim=1) @ torch.nn.functional.normalize(means, dim=1).T
    assert float(cos.min()) >= 0.0  # non-negative features: no obtuse angle between class means


@pytest.mark.parametrize("K,tau", [(2, 1.0), (4, 1.0), (4, 0.2), (6, 0.5)])
def test_features_and_classifier_on_the_sphere_end_at_the_simplex_etf(tmp_path, K, tau):
    """Graf et al. (2021), Lu & Steinerberger (2022): CE with ĥ and ŵ on the unit sphere and temperature τ is
    minimized by a simplex ETF with ĥ = ŵ_y: F* = log(1 + (K−1)exp(−K/((K−1)τ)))."""
    s = ufm_optimum(tmp_path, K=K, n=3, loss="ce", normalize="both", temperature=tau)
    F_star = math.log1p((K - 1) * math.exp(-K / ((K - 1) * tau)))
    assert s["theory"]["name"] == "sphere_etf" and s["theory"]["predicted"]["loss"] == pytest.approx(F_star, rel=1e-15)
    assert s["final"]["loss"] == pytest.approx(F_star, rel=1e-10)
    assert s["final"]["nc1"] < 1e-12 and s["final"]["nc2"] < 1e-8 and s["final"]["nc3"] < 1e-8
    assert s["config"]["wd_W"] == s["config"]["wd_H"] == 0.0  # normalized blocks carry no decay


@pytest.mark.parametrize("kwargs,message", [
    (dict(loss="mse", normalize="both"), "--normalize supports"),
    (dict(loss="ce", normalize="features", wd_H=1e-3), "--wd-H would only shrink"),
    (dict(loss="ce", normalize="both", depth=2), "--depth 1"),
    (dict(loss="ce", normalize="both", temperature=0.0), "--temperature"),
])
def test_sphere_configuration_errors(kwargs, message):
    with pytest.raises(ConfigError) as e:
        SimConfig(**kwargs)
    assert message in e.value.cli and python_names(message) in str(e.value)  # flags on the CLI, names in Python
