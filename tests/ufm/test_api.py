"""The library (ufm/__init__.py): the issue's five-line example in memory (nothing written without out=), a
registered loss run with metrics, table and certificate, a registered check found in the summary and the
table, and the in-memory result equal to what the run directory holds."""

import json
import math
import os

import pytest
import torch

import ufm
from tests.custom_losses import ce_conjugate, ce_loss, mse_conjugate, mse_loss, sq_hinge
from ufm.config import SimConfig

SMALL = dict(K=4, n=5, d=6, dtype="float64")


def test_the_example_runs_in_memory_and_writes_nothing(tmp_path, monkeypatch):
    """The issue's example, verbatim: the default CE run (K = 10, n = 100, d = 512, 5000 GD steps)."""
    monkeypatch.chdir(tmp_path)
    r = ufm.run(ufm.SimConfig(K=10, loss=ufm.LossConfig("ce"), wd=5e-4))
    assert os.listdir(tmp_path) == []  # no runs/ directory, no file
    assert isinstance(r, ufm.RunResult) and r.run_dir is None and r.status == "ok"
    assert r.params["W"].shape == (10, 512) and r.params["H"].shape == (1000, 512)
    assert r.params["W"].device.type == "cpu"
    assert r.history[0]["step"] == 0 and r.history[-1]["step"] == 5000
    assert abs(r.summary["rel_gap"]["loss"]) < 1e-3  # GD reached Zhu et al.'s closed form
    assert r.summary["gap"]["loss"] == pytest.approx(r.final["loss"] - r.summary["theory"]["predicted"]["loss"])
    table = r.table()
    assert table.startswith("theory: ce_etf") and "certificate: certified" in table


def test_with_out_the_run_directory_holds_the_same_result(tmp_path):
    r = ufm.run(SimConfig(**SMALL, loss="mse", wd=5e-3, steps=300), tmp_path / "run", progress=False)
    assert r.run_dir == tmp_path / "run"
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["final"] == pytest.approx(r.final, rel=1e-15)
    params = torch.load(tmp_path / "run" / "params.pt", weights_only=True)
    assert torch.equal(params["W"], r.params["W"])
    assert (tmp_path / "run" / "history.csv").read_text().count("\n") == len(r.history) + 1


@pytest.fixture
def registered():
    names = []

    def register(name, fn, **kw):
        names.append(name)
        return ufm.register_loss(name, fn, **kw)

    yield register
    for name in names:
        ufm.unregister_loss(name)


def test_a_registered_loss_runs_with_metrics_and_table(registered):
    registered("sq_hinge", sq_hinge, convex=True)
    r = ufm.run(SimConfig(**SMALL, loss="sq_hinge", wd=5e-3, optimizer="lbfgs", steps=300), progress=False)
    # the squared hinge at its regularized optimum: every sample classified, NC1 collapsed (no theory target)
    assert r.status == "ok" and r.final["accuracy"] == 1.0 and r.final["nc1"] < 1e-6
    assert math.isfinite(r.final["nc2"]) and r.summary["theory"]["applies"] is False
    # a direct evaluation of the objective at the returned parameters: the run measures the registered loss
    H, W = r.params["H"], r.params["W"]
    y = torch.arange(4).repeat_interleave(5)
    F = sq_hinge(H @ W.T, y).mean() + 0.5 * 5e-3 * (H.square().sum() + W.square().sum())
    assert r.final["loss"] == pytest.approx(float(F), rel=1e-12)
    cert = r.summary["certificate"]
    assert cert["applies"] and not cert["certified"]  # convex, but no conjugate: an upper value only
    assert r.final["loss"] >= cert["upper"] - 1e-9 * abs(cert["upper"])
    assert "certificate: NOT certified" in r.table() and "accuracy" in r.table()


def test_a_registered_loss_with_its_conjugate_is_certified(registered):
    """MSE registered by hand, with its conjugate: the certificate proves the same optimum as the built-in
    MSE, whose closed form (DESIGN §5.2, bias-free: F* = Kc − K²c²/2 with c = √(nλ_Wλ_H)) it must equal."""
    registered("my_mse", mse_loss, convex=True, conjugate=mse_conjugate)
    r = ufm.run(SimConfig(**SMALL, loss="my_mse", wd=5e-3, optimizer="lbfgs", steps=300), progress=False)
    c = math.sqrt(5 * 5e-3 * 5e-3)
    F_star = 4 * c - 16 * c * c / 2
    cert = r.summary["certificate"]
    assert cert["certified"] and cert["lower"] == pytest.approx(F_star, rel=1e-9)
    assert r.final["loss"] == pytest.approx(F_star, rel=1e-8)


def test_registered_losses_are_refused_when_malformed():
    with pytest.raises(ValueError, match="built-in"):
        ufm.register_loss("ce", sq_hinge)
    with pytest.raises(ufm.ConfigError, match="loss must be one of"):
        SimConfig(loss="no_such_loss")
    with pytest.raises(ValueError, match="one value per sample"):  # a scalar: refused by the probe at registration
        ufm.register_loss("bad_shape", lambda z, y: z.sum())
    assert "bad_shape" not in ufm.LOSSES


class ToyCheck:
    """A check written in a notebook: the mean logit gap, and one table line."""

    NAME, ORDER = "toy", 95

    @staticmethod
    def applies(run):
        return run.measured

    @staticmethod
    def compute(run):
        return {"logit_gap": run.final["logit_gap"], "K": run.cfg.K}

    @staticmethod
    def lines(block):
        return [f"toy check: logit gap {block['logit_gap']:.6f} over K = {block['K']}"]


def test_a_registered_check_is_in_the_summary_and_the_table(tmp_path):
    ufm.register_check(ToyCheck)
    try:
        r = ufm.run(SimConfig(**SMALL, loss="mse", wd=5e-3, steps=300), tmp_path / "run", progress=False)
    finally:
        ufm.unregister_check("toy")
    assert r.summary["toy"] == {"logit_gap": r.final["logit_gap"], "K": 4}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["toy"]["K"] == 4
    assert f"toy check: logit gap {r.final['logit_gap']:.6f} over K = 4" in r.table().splitlines()
    after = ufm.run(SimConfig(**SMALL, loss="mse", wd=5e-3, steps=5), progress=False)
    assert "toy" not in after.summary


def test_a_new_check_is_one_file(tmp_path, monkeypatch):
    """Dropping a module with NAME, ORDER, applies, compute and lines into ufm/checks/ makes it a check."""
    import ufm.checks

    path = os.path.join(ufm.checks.__path__[0], "zz_toy_file_check.py")
    with open(path, "w") as f:
        f.write('NAME, ORDER = "toy_file", 96\n\n\ndef applies(run):\n    return True\n\n\n'
                'def compute(run):\n    return {"steps": run.summary["steps"]}\n\n\n'
                'def lines(block):\n    return [f"file check: {block[\'steps\']} steps"]\n')
    try:
        r = ufm.run(SimConfig(**SMALL, loss="mse", wd=5e-3, steps=7), progress=False)
    finally:
        os.remove(path)
    assert r.summary["toy_file"] == {"steps": 7} and "file check: 7 steps" in r.table()


def test_run_batch_returns_results_in_order_and_batches_what_it_can():
    cfgs = [SimConfig(**SMALL, loss="mse", wd=w, steps=300) for w in (1e-3, 1e-2)]
    cfgs.insert(1, SimConfig(**SMALL, loss="mse", wd=5e-3, optimizer="lbfgs", steps=50))  # cannot be batched
    results = ufm.run_batch(cfgs)
    assert [r.config.wd_W for r in results] == [1e-3, 5e-3, 1e-2]
    alone = ufm.run(cfgs[2], progress=False)
    assert results[2].final["loss"] == pytest.approx(alone.final["loss"], rel=1e-10)


def test_train_returns_the_network_and_writes_nothing_without_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = ufm.TrainConfig(dataset="synthetic", classes=3, per_class=8, test_per_class=4, mlp_width=8, epochs=2,
                          batch_size=8, device="cpu", loss=ufm.LossConfig("ls", smoothing=0.2))
    r = ufm.train(cfg, progress=False)
    assert os.listdir(tmp_path) == [] and r.run_dir is None and r.summary["run_dir"] is None
    assert r.summary["config"]["loss"] == "ls" and r.summary["config"]["smoothing"] == 0.2  # flat, as before
    assert [row["epoch"] for row in r.history] == [0, 1, 2]
    # the returned network is the trained one: its classifier is the summary's
    W_norm_sq = float(r.network.W.detach().double().square().sum())
    assert r.summary["final"]["W_norm_sq"] == pytest.approx(W_norm_sq, rel=1e-12)


def test_a_registered_shift_invariant_loss_is_certified_at_the_closed_form(registered):
    """CE registered by hand, declared shift-invariant, with its conjugate: certified at Zhu et al.'s closed
    form F* = −ln(1 − (K−1)c) + (K−1)c·u*, c = √(nλ_Wλ_H), u* = ln(1/c − (K−1)) (DESIGN §5.2)."""
    ce = registered("my_ce", ce_loss, convex=True, conjugate=ce_conjugate, shift_invariant=True)
    assert ce.shift_invariant
    r = ufm.run(SimConfig(**SMALL, loss="my_ce", wd=5e-3, optimizer="lbfgs", steps=300), progress=False)
    K, c = 4, math.sqrt(5 * 5e-3 * 5e-3)
    u = math.log(1 / c - (K - 1))
    F_star = -math.log(1 - (K - 1) * c) + (K - 1) * c * u
    cert = r.summary["certificate"]
    assert cert["certified"] and cert["lower"] <= F_star * (1 + 1e-12) and cert["upper"] >= F_star * (1 - 1e-12)
    assert cert["upper"] == pytest.approx(F_star, rel=1e-9)


class BrokenCheck(ToyCheck):
    NAME, ORDER = "broken", 94

    @staticmethod
    def compute(run):
        raise RuntimeError("a bug in a plug-in")


def test_a_failing_check_costs_the_run_nothing(tmp_path):
    ufm.register_check(BrokenCheck)
    try:
        r = ufm.run(SimConfig(**SMALL, loss="mse", wd=5e-3, steps=20), tmp_path / "run", progress=False)
    finally:
        ufm.unregister_check("broken")
    assert r.summary["broken"] == {"failed": "RuntimeError: a bug in a plug-in"}
    assert "milestones" in r.summary and (tmp_path / "run" / "summary.json").exists()
    assert "broken: the check failed (RuntimeError: a bug in a plug-in)" in r.table()


def test_a_resolved_problem_runs_as_its_configuration():
    cfg = SimConfig(**SMALL, loss="ce", wd=5e-3, steps=50)
    a, b = ufm.run(cfg, progress=False), ufm.run(ufm.resolve(cfg), progress=False)
    assert a.final["loss"] == b.final["loss"] and torch.equal(a.params["W"], b.params["W"])


def test_importing_the_entry_modules_keeps_the_library_functions_callable():
    """`import ufm.train` (as python -m, pkgutil or the docstring tests do) sets the package attribute ufm.train to
    the module: the module is callable as the function it shadows."""
    import importlib

    importlib.import_module("ufm.train")
    importlib.import_module("ufm.sweep")
    with pytest.raises(TypeError, match="cfg must be a TrainConfig"):
        ufm.train("not a config")
    with pytest.raises(TypeError, match="grid"):
        ufm.sweep("not a grid", out="x")
