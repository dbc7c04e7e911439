"""HUG (Liu et al. 2023): the loss against its definition, runs ending at the ETF / spherical code, and the
decoupling of intra-class compactness from inter-class separation."""

import itertools

import numpy as np
import pytest
import torch

import ufm
from analysis.frames import spherical_code
from ufm.config import ConfigError, SimConfig
from ufm.errors import python_names
from ufm.fit.optimizers import make_optimizer
from ufm.losses import LOSSES, HugOptions, LossOptions
from ufm.model import init_params, objective_and_grad
from ufm.problem import resolve


def naive_hug(H, W, y, o: HugOptions):
    U = W / np.linalg.norm(W, axis=1, keepdims=True)
    X = H / np.linalg.norm(H, axis=1, keepdims=True)
    r = np.array([np.linalg.norm(U[i] - U[j]) for i, j in itertools.combinations(range(len(U)), 2)])
    if o.measure == "energy":
        inter = (r ** -o.s).sum() / len(U)
    elif o.measure == "gram":
        G = np.exp(-np.square(np.linalg.norm(U[:, None] - U[None], axis=2)) / (2 * o.sigma**2))
        inter = -np.linalg.slogdet(G)[1] / len(U)
    else:
        inter = np.log(np.exp(-o.sharpness * r).sum()) / o.sharpness
    intra = np.mean([np.sum((x - U[t]) ** 2) for x, t in zip(X, y, strict=True)])
    return o.inter_weight * inter + o.intra_weight * intra


@pytest.mark.parametrize("opts", [HugOptions(), HugOptions(s=2.0, intra_weight=0.3),
                                  HugOptions(measure="gram", sigma=0.8),
                                  HugOptions(measure="maxgap", sharpness=10.0, inter_weight=2.0)])
def test_hug_loss_against_its_definition(opts):
    g = torch.Generator().manual_seed(0)
    H = torch.randn(30, 4, generator=g, dtype=torch.float64)
    W = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 6, (30,), generator=g)
    got = float(LOSSES["hug"](H @ W.T, y, LossOptions(hug=opts), features=H, classifier=W))
    assert got == pytest.approx(naive_hug(H.numpy(), W.numpy(), y.numpy(), opts), rel=1e-12)


def run(tmp_path, **kw):
    cfg = SimConfig.from_dict({"n": 5, "loss": "hug", "optimizer": "lbfgs", "dtype": "float64", **kw})
    return ufm.run(cfg, tmp_path / "run", progress=False, overwrite=True).summary  # one folder per test, reused


@pytest.mark.parametrize("measure", ["energy", "gram", "maxgap"])
def test_hug_with_K_at_most_d_plus_1_ends_at_the_simplex_etf(tmp_path, measure):
    s = run(tmp_path, K=5, d=6, hug_measure=measure)
    assert s["theory"]["name"] == "simplex_etf"
    assert s["final"]["nc2"] < 1e-3 and s["final"]["nc1"] < 1e-8 and s["final"]["nc4"] == 0
    assert s["gnc"]["etf_exists"] and abs(s["gnc"]["energy_rel_gap_W"]) < 1e-6


def test_hug_beyond_d_plus_1_ends_at_the_spherical_code(tmp_path):
    """K = 8 > d + 1 = 4: the Thomson code of 8 points (a square antiprism), energy 19.675287861."""
    s = run(tmp_path, K=8, d=3)
    assert s["theory"]["name"] == "spherical_code" and not s["gnc"]["etf_exists"]
    assert abs(s["gnc"]["energy_rel_gap_W"]) < 1e-3 and abs(s["gnc"]["energy_rel_gap_means"]) < 1e-3
    assert s["final"]["energy_W"] == pytest.approx(19.675287861, rel=1e-3)
    assert s["final"]["spherical_spread"] < 1e-10
    assert np.isnan(s["final"]["nc2"])  # no ETF in R^3 for 8 classes: NC2 is not reported


def test_ce_beyond_d_plus_1_is_reported_against_the_same_code(tmp_path):
    cfg = SimConfig(K=8, d=3, n=5, loss="ce", wd_W=5e-3, wd_H=5e-3, optimizer="lbfgs", dtype="float64")
    s = ufm.run(cfg, tmp_path / "ce", progress=False).summary
    assert s["gnc"]["target"]["energy"] == pytest.approx(spherical_code(8, 3).energy)
    assert "energy_rel_gap_W" in s["gnc"] and "angle_gap_W_deg" in s["gnc"]


def _trajectory(intra: float, steps: int = 300):
    cfg = SimConfig.from_dict(dict(K=6, d=3, n=4, loss="hug", hug_intra=intra, dtype="float64", lr=0.5))
    problem = resolve(cfg)
    y = problem.labels(torch.device("cpu"))
    params = init_params(problem, torch.device("cpu"), torch.float64)
    opt = make_optimizer(cfg, params)
    for _ in range(steps):
        opt.step(lambda: objective_and_grad(params, y, problem)[0])
    from analysis.metrics import nc_metrics

    H = params["H"].detach()
    return params["W"].detach().clone(), nc_metrics(H / H.norm(dim=1, keepdim=True), y, K=6)["nc1"]


def test_hug_decouples_compactness_from_separation():
    """The intra-class weight changes how far the features have collapsed (NC1) but not the proxies:
    the intra-class term moves only the features, so the proxies follow the same trajectory."""
    W_weak, nc1_weak = _trajectory(0.1)
    W_strong, nc1_strong = _trajectory(10.0)
    torch.testing.assert_close(W_weak, W_strong, rtol=0, atol=1e-12)
    assert nc1_strong < 1e-3 * nc1_weak


@pytest.mark.parametrize("kwargs, message", [
    (dict(loss="hug", wd_H=1e-3), "use --wd 0"),
    (dict(loss="hug", bias=True), "use --no-bias"),
    (dict(loss="hug", hug_measure="volume"), "--hug-measure"),
    (dict(loss="hug", hug_sigma=0.0), "--hug-sigma"),
    (dict(loss="hug", hug_sigma=100.0), "--hug-sigma"),
    (dict(loss="hug", K=3, d=1), "two points"),
])
def test_hug_configuration_errors(kwargs, message):
    with pytest.raises(ConfigError, match=python_names(message)):
        SimConfig.from_dict(kwargs)


def test_hug_defaults_have_no_weight_decay_and_unit_scale():
    cfg = SimConfig(loss="hug")
    assert (cfg.wd_W, cfg.wd_H, cfg.wd_b, cfg.init_scale) == (0.0, 0.0, 0.0, 1.0)
    assert SimConfig(loss="mse").wd_W == 5e-4


def test_fixed_proxies_are_the_code_and_stay_fixed(tmp_path):
    s = run(tmp_path, K=7, d=3, hug_proxies="fixed")
    assert s["final"]["energy_W"] == pytest.approx(spherical_code(7, 3).energy, rel=1e-12)
    assert s["final"]["spherical_spread"] < 1e-10 and s["converged"]


def test_cached_codes_are_read_only_and_coincident_proxies_give_finite_gradients():
    for K in (4, 7):
        with pytest.raises(ValueError):
            spherical_code(K, 3).points[0, 0] = 1.0
    W = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    from ufm.losses import inter_class_nonuniformity

    inter_class_nonuniformity(W, HugOptions(measure="maxgap")).backward()
    assert torch.isfinite(W.grad).all()


@pytest.mark.parametrize("opts", [HugOptions(s=1.0), HugOptions(s=0.0), HugOptions(measure="maxgap", sharpness=20.0)])
def test_hug_inter_class_term_in_tiles_equals_the_dense_definition(opts):
    """HUG's inter-class term runs in K×K tiles (analysis.uniformity): with a budget of a few KiB (tiles of 12
    proxies), its value and its gradient with respect to the proxies equal autograd through the dense K×K
    definition: E_s/K, or (1/t)·log Σ_{i<j} exp(−t·r_ij)."""
    from analysis.blocked import budget
    from ufm.losses import inter_class_nonuniformity

    g = torch.Generator().manual_seed(4)
    W = torch.randn(40, 6, dtype=torch.float64, generator=g)
    A, B = W.clone().requires_grad_(True), W.clone().requires_grad_(True)
    with budget(6 * 1024):
        tiled = inter_class_nonuniformity(A, opts)
        tiled.backward()
    U = B / B.norm(dim=1, keepdim=True)
    iu = torch.triu_indices(40, 40, 1)
    r = (2 - 2 * (U @ U.T)[iu[0], iu[1]]).clamp_min(1e-30).sqrt()
    if opts.measure == "energy":
        dense = (-torch.log(r).sum() if opts.s == 0 else r.pow(-opts.s).sum()) / 40
    else:
        dense = torch.logsumexp(-opts.sharpness * r, 0) / opts.sharpness
    dense.backward()
    assert float(tiled.detach()) == pytest.approx(float(dense.detach()), rel=1e-13)
    torch.testing.assert_close(A.grad, B.grad, rtol=1e-12, atol=1e-15)


def test_hug_gram_measure_beyond_the_memory_budget_is_refused_before_the_run():
    """The Gram determinant needs the whole K×K kernel: a K whose kernel exceeds the budget is bad input (one line
    naming the cost and the measures that run in tiles), not an out-of-memory error mid-run."""
    from analysis.blocked import budget

    with budget(64 * 1024), pytest.raises(ConfigError, match="hug_measure gram: .*K×K kernel.*energy or maxgap"):
        resolve(SimConfig.from_dict(dict(K=100, d=8, loss="hug", hug_measure="gram")))
