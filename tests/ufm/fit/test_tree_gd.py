"""The hierarchical losses' GD steps written out (ufm.fit.tree_gd) follow the autograd step exactly (float64, every
step's objective and the end point): HXE with and without a bias, for each weighting and α, on trees with leaves at
uneven depths; soft labels for two β."""

import pytest
import torch

import ufm
from ufm.config import SimConfig
from ufm.fit.steppers import Autograd, make_stepper
from ufm.fit.tree_gd import HXEStep, SoftLabelStep, tree_fused, tree_step
from ufm.model import init_params
from ufm.problem import class_tree, resolve


def copy(params):
    return {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}


@pytest.mark.parametrize("extra", [
    {"hierarchy": "balanced:2,3", "alpha": 0.0},
    {"hierarchy": "balanced:2,3", "alpha": 0.7, "bias": True, "wd_b": 0.0},
    {"hierarchy": "balanced:3,2,2", "alpha": 0.3, "hxe_weighting": "depth"},
    {"hierarchy": "balanced:2,2,2", "alpha": 0.1, "hxe_weighting": "depth-normalized", "bias": True},
    {"hierarchy": "tiered_imagenet_h", "n": 1, "alpha": 0.1},  # leaves at uneven depths
    {"hierarchy": "balanced:2,3", "loss": "soft", "beta": 10.0},
    {"hierarchy": "balanced:3,2,2", "loss": "soft", "beta": 2.0, "bias": True},
])
def test_the_written_out_step_is_the_autograd_step(extra):
    K = class_tree(extra["hierarchy"]).K
    settings = {"K": K, "n": 3, "d": 10, "loss": "hxe", "dtype": "float64", "wd": 5e-3, **extra}
    cfg = SimConfig.from_dict(settings)
    problem = resolve(cfg)
    y = problem.labels()
    start = init_params(problem, torch.device("cpu"), torch.float64)
    ref, ours = Autograd(problem, copy(start), y), tree_step(problem, copy(start), y)
    assert isinstance(ours, HXEStep if cfg.loss.name == "hxe" else SoftLabelStep)
    for _ in range(40):
        assert float(ours.step()) == pytest.approx(float(ref.step()), rel=1e-12)
    for key in ours.params(0):
        torch.testing.assert_close(ours.params(0)[key], ref.params(0)[key], rtol=1e-10, atol=1e-12)


def test_runs_use_it_and_end_where_they_did(monkeypatch):
    cfg = SimConfig.from_dict({"K": 6, "n": 3, "d": 10, "loss": "hxe", "hierarchy": "balanced:2,3",
                               "dtype": "float64", "steps": 300, "certificate": False})
    problem = resolve(cfg)
    assert tree_fused(cfg) and isinstance(make_stepper([problem], [init_params(problem, torch.device("cpu"),
                                                                             torch.float64)], problem.labels()),
                                         HXEStep)
    assert not tree_fused(SimConfig.from_dict({**cfg.to_dict(), "optimizer": "adam"}))
    new = ufm.run(cfg, progress=False)
    monkeypatch.setattr("ufm.fit.tree_gd.tree_fused", lambda cfg: False)  # the autograd path, as before
    old = ufm.run(cfg, progress=False)
    assert new.final["loss"] == pytest.approx(old.final["loss"], rel=1e-12)
    torch.testing.assert_close(new.params["H"], old.params["H"], rtol=1e-9, atol=1e-12)
