"""The fixed-frame reduction (ufm.fit.fixed_frame) steps HAFrame's and fixed-proxy HUG's features in K + 1
coordinates per row (FixedFrame), or HAFrame's full-batch GD on the logits (LogitGD): every iterate, mapped back,
equals the full-space iterate (float64, to rounding), for GD, heavy-ball SGD (full batch and mini-batches), and a
whole run ends at the same point as before."""

import pytest
import torch

import ufm
from ufm.config import SimConfig
from ufm.fit import fixed_frame
from ufm.fit.fixed_frame import RESYNC_EVERY, FixedFrame, LogitGD, block_gram, logit_steppable, reducible
from ufm.fit.measure import measure
from ufm.fit.steppers import Autograd, make_stepper
from ufm.model import init_params
from ufm.problem import resolve

BASE = {"K": 6, "n": 4, "d": 24, "dtype": "float64", "loss": "haframe", "hierarchy": "balanced:2,3"}


def copy(params):
    return {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in params.items()}


@pytest.mark.parametrize("stepper, extra", [
    (FixedFrame, dict(optimizer="gd")), (FixedFrame, dict(optimizer="sgd", batch_size=8)),
    (FixedFrame, dict(loss="hug", hug_proxies="fixed", wd=0.0)),
    (LogitGD, dict(optimizer="gd")),
    (LogitGD, dict(optimizer="gd", hierarchy="balanced:2", K=2, d=6)),  # K = 2: no weak direction
    (LogitGD, dict(optimizer="gd", wd=1e-7)), (LogitGD, dict(optimizer="gd", wd=0.05)),  # tiny and large decay
    (LogitGD, dict(optimizer="gd", imbalance=4.0, minority=3, n=8)),
    (LogitGD, dict(optimizer="gd", hierarchy="cifar100", K=100, n=2, d=128, steps=2 * RESYNC_EVERY)),
])
def test_reduced_iterates_equal_the_full_space_iterates(stepper, extra):
    """Exactness of the reductions (module docstring of ufm.fit.fixed_frame): the same objective at every step
    and the same iterate, float64, to rounding — over LogitGD's resynchronizations too."""
    cfg = SimConfig.from_dict({**BASE, **extra})
    problem = resolve(cfg)
    y = problem.labels()
    start = init_params(problem, torch.device("cpu"), torch.float64)
    full, reduced = Autograd(problem, copy(start), y), stepper(problem, copy(start), y)
    if stepper is FixedFrame:
        assert reduced.reduced["H"].shape[1] <= cfg.K + 1  # rank(W) + 1: K − 1 + 1 for HUG's simplex
    for _ in range(max(60, extra.get("steps", 0) + 3)):
        a, b = full.step(), reduced.step()
        assert float(a) == pytest.approx(float(b), rel=1e-11)  # the same objective at every step
    H_full, H_reduced = full.params(0)["H"].detach(), reduced.params(0)["H"].detach()
    assert float((H_full - H_reduced).abs().max()) <= 1e-10 * float(H_full.abs().max())


def test_logit_gd_steps_a_weak_direction_on_its_own():
    """HAFrame's frame has a numerically null direction (singular value ~1e-8 of W, not exactly 0): reading its
    coordinate off the logits would amplify rounding 1e8-fold, so LogitGD steps it directly (and stays exact)."""
    problem = resolve(SimConfig.from_dict(BASE))
    W = init_params(problem, torch.device("cpu"), torch.float64)["W"]
    sv = torch.linalg.svdvals(W)
    assert 0 < float(sv[-1]) < 1e-6 * float(sv[0])
    stepper = LogitGD(problem, init_params(problem, torch.device("cpu"), torch.float64), problem.labels())
    assert stepper.a_weak.shape == (problem.cfg.N, 1) and stepper.read.shape == (problem.cfg.K, problem.cfg.K - 1)


def test_logit_gd_in_float32_stays_with_the_float64_iterates():
    """Over 1000 float32 steps (10 resynchronizations of ‖a‖²) LogitGD ends within float32 rounding of the float64
    path (1e-5 relative), like the full-space float32 step, and within 5× its error: no drift of the recurrence.
    (Reading a off the logits amplifies Z's rounding by up to s_1/s_j, the frame's singular-value spread.)"""
    cfg = SimConfig.from_dict({**BASE, "dtype": "float32"})
    problem, y = resolve(cfg), resolve(cfg).labels()
    start = init_params(problem, torch.device("cpu"), torch.float64)
    ref = Autograd(problem, copy(start), y)
    f32 = {k: v.detach().float().clone().requires_grad_(v.requires_grad) for k, v in start.items()}
    fast, full = LogitGD(problem, copy(f32), y), Autograd(problem, copy(f32), y)
    for _ in range(1000):
        ref.step(), fast.step(), full.step()
    H = ref.params(0)["H"].detach()
    scale = float(H.abs().max())
    fast_err = float((fast.params(0)["H"].detach().double() - H).abs().max()) / scale
    full_err = float((full.params(0)["H"].detach().double() - H).abs().max()) / scale
    assert fast_err < 1e-5 and full_err < 1e-5 and fast_err < 5 * full_err, (fast_err, full_err)


def test_a_run_ends_where_it_ended_before(monkeypatch):
    """ufm.run picks the reduction for HAFrame under GD; with it switched off (the old full-space path) the run
    ends at the same point, and at the same objective, to 1e-10."""
    cfg = SimConfig.from_dict({**BASE, "steps": 300})
    assert logit_steppable(cfg) and isinstance(make_stepper([resolve(cfg)], [init_params(resolve(cfg), torch.device(
        "cpu"), torch.float64)], resolve(cfg).labels()), LogitGD)
    new = ufm.run(cfg, progress=False)
    monkeypatch.setattr(fixed_frame, "reducible", lambda cfg: False)
    old = ufm.run(cfg, progress=False)
    assert float((new.params["H"] - old.params["H"]).abs().max()) <= 1e-10 * float(old.params["H"].abs().max())
    assert new.final["loss"] == pytest.approx(old.final["loss"], rel=1e-12)
    assert [r["step"] for r in new.history] == [r["step"] for r in old.history]


def test_only_rotation_equivariant_optimizers_and_fixed_frames_are_reduced():
    assert not reducible(SimConfig.from_dict({**BASE, "optimizer": "adam"}))  # coordinate-wise
    assert not reducible(SimConfig.from_dict({**BASE, "optimizer": "lbfgs"}))  # its first step uses ‖g‖₁
    assert not reducible(SimConfig.from_dict({**BASE, "loss": "ce", "hierarchy": None}))  # W is trained
    assert not reducible(SimConfig.from_dict({**BASE, "d": 7}))  # no idle coordinates (d <= K + 1)
    assert not logit_steppable(SimConfig.from_dict({**BASE, "optimizer": "sgd"}))  # FixedFrame's autograd step
    assert not logit_steppable(SimConfig.from_dict({**BASE, "loss": "hug", "hug_proxies": "fixed"}))


def test_block_gram_is_the_frame_gram_and_refuses_what_is_not():
    """HAFrame's S is a function of the LCA distance, so S = δI + B C Bᵀ over the tree's smallest clusters
    (CIFAR-100: 20 clusters of 5); G S through it equals the dense product (float64, to rounding). A Gram that is
    not such a function has no block form."""
    problem = resolve(SimConfig.from_dict({**BASE, "K": 100, "hierarchy": "cifar100", "n": 1, "d": 128}))
    S = problem.options.hierarchy.frame_gram
    lca = torch.tensor(problem.tree.lca_heights)
    g = block_gram(S, lca)
    assert g is not None and g.B.shape == (100, 20) and g.B.sum(0).tolist() == [5.0] * 20
    G = torch.randn(7, 100, dtype=torch.float64)
    assert float((g.times(G, torch.empty_like(G)) - G @ S).abs().max()) < 1e-13
    broken = S.clone()
    broken[0, 1] = broken[1, 0] = broken[0, 1] + 1e-6
    assert block_gram(broken, lca) is None
    assert block_gram(S[:6, :6], lca[:6, :6]) is None  # too few classes to gain


@pytest.mark.parametrize("init_scale", [100.0, 1000.0])
def test_logit_gd_cross_entropy_survives_an_underflowing_softmax(init_scale):
    """Logit gaps of 130 and 1300 underflow the true class's float32 softmax probability: LogitGD recomputes those
    rows' −log p_y exactly, so its first objective equals the float64 full-space one to float32 precision."""
    cfg = SimConfig.from_dict({**BASE, "dtype": "float32", "init_scale": init_scale, "lr": 1e-3})
    problem = resolve(cfg)
    y = problem.labels()
    start = init_params(problem, torch.device("cpu"), torch.float32)
    Z = start["H"].detach() @ start["W"].T
    assert float((Z.max(1).values - Z.min(1).values).max()) > 100
    ref = Autograd(resolve(SimConfig.from_dict({**cfg.to_dict(), "dtype": "float64"})),
                   {k: v.detach().double().requires_grad_(v.requires_grad) for k, v in start.items()}, y)
    assert float(LogitGD(problem, copy(start), y).step()) == pytest.approx(float(ref.step()), rel=1e-6)


@pytest.mark.parametrize("dtype, steps, below", [("float64", 2000, 1e-10), ("float32", 1000, 1e-6)])
def test_logit_gd_measurements_equal_autograd_ones_near_the_optimum(dtype, steps, below):
    """measure() with LogitGD's closed-form F, ‖∇F‖ and logits gives the row autograd on the full H gives — also
    near convergence, where ‖∇F‖ is a cancellation (Wᵀg ≈ −k·h, k·‖h‖ ~ 5e-3): an expanded square
    gᵀSg + 2k⟨z, g⟩ + k²n² lost it to rounding (0 in float32, stuck near 1e-10 in float64)."""
    cfg = SimConfig.from_dict({**BASE, "dtype": dtype, "lr": 2.0, "wd": 5e-3})
    problem, y = resolve(cfg), resolve(cfg).labels()
    stepper = LogitGD(problem, init_params(problem, torch.device("cpu"), getattr(torch, dtype)), y)
    for _ in range(steps):
        stepper.step()
    plain, known = measure(stepper.params(0), y, problem), measure(stepper.params(0), y, problem, stepper.objective(0))
    assert plain["grad_norm"] < below  # near the optimum: the cancellation regime
    assert known["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-6 if dtype == "float64" else 0.02)
    for key in ("loss", "data_loss", "z_true", "logit_gap", "nc1", "nc4", "accuracy", "hier_dist@5", "H_norm_sq"):
        assert known[key] == pytest.approx(plain[key], rel=1e-10 if dtype == "float64" else 1e-6, abs=1e-12), key
