"""The fixed-frame reduction (ufm.fit.fixed_frame) steps HAFrame's and fixed-proxy HUG's features in K + 1
coordinates per row: every iterate, mapped back, equals the full-space iterate (float64, to rounding), for GD,
heavy-ball SGD (full batch and mini-batches), and a whole run ends at the same point as before."""

import pytest
import torch

import ufm
from ufm.config import SimConfig
from ufm.fit import fixed_frame
from ufm.fit.fixed_frame import FixedFrame, reducible
from ufm.fit.steppers import Autograd, make_stepper
from ufm.model import init_params
from ufm.problem import resolve

BASE = {"K": 6, "n": 4, "d": 24, "dtype": "float64", "loss": "haframe", "hierarchy": "balanced:2,3"}


def copy(params):
    return {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in params.items()}


@pytest.mark.parametrize("extra", [dict(optimizer="gd"), dict(optimizer="sgd", batch_size=8),
                                   dict(loss="hug", hug_proxies="fixed", wd=0.0)])
def test_reduced_iterates_equal_the_full_space_iterates(extra):
    cfg = SimConfig.from_dict({**BASE, **extra})
    problem = resolve(cfg)
    y = problem.labels()
    start = init_params(problem, torch.device("cpu"), torch.float64)
    full, reduced = Autograd(problem, copy(start), y), FixedFrame(problem, copy(start), y)
    assert reduced.reduced["H"].shape[1] <= cfg.K + 1  # rank(W) + 1: K − 1 + 1 for HUG's simplex
    for _ in range(60):
        a, b = full.step(), reduced.step()
        assert float(a) == pytest.approx(float(b), rel=1e-11)  # the same objective at every step
    H_full, H_reduced = full.params(0)["H"], reduced.params(0)["H"]
    assert float((H_full - H_reduced).abs().max()) <= 1e-10 * float(H_full.abs().max())


def test_a_run_ends_where_it_ended_before(monkeypatch):
    """ufm.run picks the reduction for HAFrame under GD; with it switched off (the old full-space path) the run
    ends at the same point, and at the same objective, to 1e-10."""
    cfg = SimConfig.from_dict({**BASE, "steps": 300})
    assert reducible(cfg) and isinstance(make_stepper([resolve(cfg)], [init_params(resolve(cfg), torch.device(
        "cpu"), torch.float64)], resolve(cfg).labels()), FixedFrame)
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
