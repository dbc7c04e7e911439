"""Logits in blocks (DESIGN §8): under a memory budget that forces blocks of a few rows, every step, loss,
measurement and check gives the run it gives in one block — float64, 100 steps, the loss at every measurement and
the final parameters to 1e-12 — for every loss and stepper (fused GD, the written-out tree steps, HAFrame's
LogitGD and FixedFrame, autograd through the blocked loss with SGD and Adam, the sphere, a deep UFM, a registered
loss)."""

import math

import pytest
import torch

import ufm
from analysis.blocked import budget
from tests.custom_losses import sq_hinge
from ufm.config import SimConfig
from ufm.fit.fixed_frame import LogitGD
from ufm.fit.fused_gd import GDStep
from ufm.fit.steppers import Autograd, FusedGD, make_stepper
from ufm.fit.tree_gd import HXEStep, SoftLabelStep
from ufm.losses import register_loss, unregister_loss
from ufm.model import init_params
from ufm.problem import resolve

SMALL = 3072  # bytes: blocks of a handful of rows at K = 6, tiles of 9 × 9

CASES = {
    "ce gd": dict(loss="ce", bias=True),
    "ls gd": dict(loss="ls", smoothing=0.2),
    "mse gd": dict(loss="mse", bias=True, wd_b=0.0),
    "ce sgd": dict(loss="ce", optimizer="sgd", lr=0.2),
    "mse adam": dict(loss="mse", optimizer="adam", lr=1e-2),
    "focal": dict(loss="focal", lr=0.5),
    "hxe": dict(loss="hxe", hierarchy="balanced:2,3", bias=True),
    "soft": dict(loss="soft", hierarchy="balanced:2,3"),
    "haframe (LogitGD)": dict(loss="haframe", hierarchy="balanced:2,3", d=12, lr=0.5),
    "haframe sgd (FixedFrame)": dict(loss="haframe", hierarchy="balanced:2,3", d=12, optimizer="sgd", lr=0.2),
    "ce on the sphere": dict(loss="ce", normalize="both", temperature=0.5, lr=0.2, wd_W=0.0, wd_H=0.0),
    "ls features on the sphere": dict(loss="ls", normalize="features", wd_H=0.0, lr=0.2),
    "deep relu ce": dict(loss="ce", depth=2, act="relu", lr=0.3),
    "registered": dict(loss="blocked_sq_hinge", lr=0.05),
}


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_loss("blocked_sq_hinge", sq_hinge, replace=True)
    yield
    unregister_loss("blocked_sq_hinge")


def run(settings, nbytes=None):
    cfg = SimConfig.from_dict({"K": 6, "n": 5, "d": 8, "steps": 100, "dtype": "float64", "wd": 5e-3,
                               "certificate": False, **settings})
    with budget(nbytes):
        return ufm.run(cfg, progress=False)


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_in_blocks_equals_the_run_in_one_block(case):
    whole, blocked = run(CASES[case]), run(CASES[case], SMALL)
    assert [r["step"] for r in blocked.history] == [r["step"] for r in whole.history]
    for a, b in zip(blocked.history, whole.history, strict=True):
        for key in ("loss", "grad_norm", "nc1", "z_true", "accuracy", "nc4"):
            if not math.isnan(b[key]):
                assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-12), (a["step"], key)
    for name, value in whole.params.items():
        scale = max(1.0, float(value.abs().max()))
        assert torch.allclose(blocked.params[name], value, rtol=0, atol=1e-12 * scale), name


def blocks_of(stepper):
    """How many row blocks a stepper runs over (its own record of them)."""
    inner = getattr(stepper, "gd", stepper)
    for attr in ("blocks", "row_blocks"):
        blocks = getattr(inner, attr, None)
        if isinstance(blocks, list):
            return len(blocks)
    return math.ceil(len(stepper.y) / stepper.rows)


@pytest.mark.parametrize("case,kind", [("ce gd", FusedGD), ("hxe", HXEStep), ("soft", SoftLabelStep),
                                       ("haframe (LogitGD)", LogitGD)])
def test_the_small_budget_really_splits_the_steps(case, kind):
    cfg = SimConfig.from_dict({"K": 6, "n": 5, "d": 8, "dtype": "float64", **CASES[case]})
    p = resolve(cfg)
    with budget(SMALL):
        stepper = make_stepper([p], [init_params(p, torch.device("cpu"), torch.float64)], p.labels())
    assert isinstance(stepper, kind) and blocks_of(stepper) >= 2


def test_autograd_loss_in_blocks_has_the_autograd_gradient():
    """The blocked autograd function's gradients (recomputed block by block in the backward pass) equal autograd's
    on the whole logits, for every parameter, with a bias (float64, 1e-13)."""
    cfg = SimConfig(K=6, n=5, d=8, loss="focal", bias=True, dtype="float64", optimizer="adam")
    p = resolve(cfg)
    a = init_params(p, torch.device("cpu"), torch.float64)
    b = {k: v.detach().clone().requires_grad_(True) for k, v in a.items()}
    whole = Autograd(p, a, p.labels())
    whole.step()
    with budget(SMALL):
        blocked = Autograd(p, b, p.labels())
        blocked.step()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-13), name


def test_a_batch_of_configurations_in_blocks():
    """The batched fused step (B = 3 weight decays) in blocks equals it in one block."""
    y = torch.arange(6).repeat_interleave(4)
    g = torch.Generator().manual_seed(0)
    H = torch.randn(3, 24, 5, generator=g, dtype=torch.float64)
    W = torch.randn(3, 6, 5, generator=g, dtype=torch.float64)
    b = torch.zeros(3, 6, dtype=torch.float64)
    wd = torch.tensor([1e-3, 1e-2, 1e-1], dtype=torch.float64)
    one = torch.ones(3, dtype=torch.float64)
    params = [(H.clone(), W.clone(), b.clone()) for _ in range(2)]
    for rows, (Hc, Wc, bc) in zip((None, 5), params, strict=True):
        step = GDStep(y, ufm.fit.fused_gd.LossSpec("ce"), one, wd, wd, wd, K=6, rows=rows)
        for _ in range(20):
            step.step(Hc, Wc, bc)
    for x, z in zip(*params, strict=True):
        assert torch.allclose(x, z, rtol=0, atol=1e-13)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_the_saddle_check_in_blocks(loss):
    """At the origin G has one row per class repeated n_k times: σ_max(G) = σ_max(D^{1/2} G_K), by Lanczos over
    blocks of classes under a small budget, the same number as the dense K × K route (imbalanced counts)."""
    from ufm.fit.saddle import origin_saddle

    counts = tuple(3 + k % 4 for k in range(30))
    p = resolve(SimConfig(counts=counts, d=4, loss=loss, wd=1e-4, dtype="float64"))
    y = p.labels()
    zero = {"H": torch.zeros(len(y), 4, dtype=torch.float64), "W": torch.zeros(30, 4, dtype=torch.float64)}
    F0 = math.log(30) if loss == "ce" else 0.5
    dense = origin_saddle(p, zero, y, F0)
    with budget(8192):
        blocked = origin_saddle(p, zero, y, F0)
    assert dense is not None and blocked is not None
    value = lambda text: float(text.split("singular value there ")[1].split(" ")[0])  # noqa: E731
    assert value(blocked) == pytest.approx(value(dense), rel=1e-3)  # printed to 4 digits
