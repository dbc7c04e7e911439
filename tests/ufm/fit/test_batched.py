"""The batched UFM (ufm.run_batch, one fused stepper): B configurations in one program give the summaries of B
sequential runs (the issue's bar: 1e-6 in float64), a diverging member does not touch the others,
incompatible configurations run apart (and one stepper refuses them)."""

import math

import pytest

import ufm
from ufm.config import SimConfig
from ufm.fit.steppers import batch_key, make_stepper
from ufm.problem import resolve

BASE = dict(K=4, n=5, d=6, bias=True, steps=200, dtype="float64", certificate=False)


def test_batched_runs_equal_sequential_runs(tmp_path):
    cfgs = [SimConfig(**BASE, loss="ce", wd_W=w, wd_H=w, wd_b=w, lr=lr, seed=s, init_scale=i)
            for w, lr, s, i in [(5e-4, 1.0, 0, 0.1), (1e-2, 0.5, 1, 1.0), (0.0, 1.5, 2, 0.3)]]
    batched = [r.summary for r in ufm.run_batch(cfgs, [tmp_path / f"b{i}" for i in range(3)])]
    for i, cfg in enumerate(cfgs):
        alone = ufm.run(cfg, tmp_path / f"s{i}", progress=False).summary
        assert batched[i]["status"] == alone["status"] == "ok"
        assert len(batched[i]["final"]) == len(alone["final"])
        for key, value in alone["final"].items():
            if isinstance(value, float) and math.isfinite(value):
                assert batched[i]["final"][key] == pytest.approx(value, rel=1e-6, abs=1e-12), key
        assert (tmp_path / f"b{i}" / "history.csv").read_text().count("\n") == \
            (tmp_path / f"s{i}" / "history.csv").read_text().count("\n")


def test_each_block_decays_by_its_own_weight_decay_in_a_batch():
    """λ_W ≠ λ_H ≠ λ_b in every member (λ_H = 10 λ_W in one, λ_W = 10 λ_H in the other): a batched step that
    decayed H by λ_W, W by λ_H or b by another block's λ would end elsewhere than the single runs (the single
    configuration steps on its own path, H's decay in a scalar), e.g. ‖H‖² = 40.1 instead of 15.2 for the first."""
    cfgs = [SimConfig(**BASE, loss="ce", wd_W=1e-3, wd_H=1e-2, wd_b=1e-4, lr=1.0, seed=0),
            SimConfig(**BASE, loss="ce", wd_W=1e-2, wd_H=1e-3, wd_b=0.0, lr=0.5, seed=1)]
    assert batch_key(cfgs[0]) == batch_key(cfgs[1])  # one fused batch
    batched = [r.final for r in ufm.run_batch(cfgs)]
    for i, cfg in enumerate(cfgs):
        alone = ufm.run(cfg, progress=False).final
        for key, value in alone.items():
            if isinstance(value, float) and math.isfinite(value):
                assert batched[i][key] == pytest.approx(value, rel=1e-6, abs=1e-12), (i, key)
    assert batched[0]["H_norm_sq"] == pytest.approx(15.2277, rel=1e-5)  # this seed's run, float64
    assert batched[1]["H_norm_sq"] == pytest.approx(42.9239, rel=1e-5)


def test_a_diverging_member_leaves_the_others_alone(tmp_path):
    cfgs = [SimConfig(**BASE, loss="mse", lr=lr) for lr in (1.0, 1e6, 0.5)]
    out = [r.summary for r in ufm.run_batch(cfgs, [tmp_path / str(i) for i in range(3)])]
    assert [s["status"] for s in out] == ["ok", "diverged", "ok"]
    assert out[1]["divergence"]["step"] is not None
    alone = ufm.run(cfgs[2], tmp_path / "alone", progress=False).summary
    assert out[2]["final"]["nc1"] == pytest.approx(alone["final"]["nc1"], rel=1e-6)


def test_only_compatible_configurations_share_a_batch(tmp_path):
    assert batch_key(SimConfig(**BASE, wd_W=1e-3)) == batch_key(SimConfig(**BASE, wd_W=1e-2, lr=0.3, seed=4))
    assert batch_key(SimConfig(**BASE, loss="ce")) != batch_key(SimConfig(**BASE, loss="mse"))
    assert batch_key(SimConfig(**BASE, optimizer="lbfgs")) is None  # no closed-form step
    mixed = [SimConfig.from_dict({**BASE, "d": 6}), SimConfig.from_dict({**BASE, "d": 7})]
    with pytest.raises(ValueError, match="one batch_key"):
        make_stepper([resolve(c) for c in mixed], [{}, {}], resolve(mixed[0]).labels())
    results = ufm.run_batch(mixed)  # the library runs them apart, in order
    assert [r.params["H"].shape[1] for r in results] == [6, 7]
