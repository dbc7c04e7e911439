"""UFM runs end at the closed-form optimum of analysis.theory (DESIGN §5.2) and write the run directory."""

import csv
import json

import pytest

import ufm
from ufm.config import SimConfig


def run(tmp_path, **kw):
    cfg = SimConfig.from_dict({"K": 4, "n": 5, "d": 6, "wd_W": 5e-3, "wd_H": 5e-3, "wd_b": 5e-3, **kw})
    return ufm.run(cfg, tmp_path / "run", progress=False, overwrite=True).summary  # one folder per test, reused


@pytest.mark.parametrize("kw,target", [
    ({"loss": "mse"}, "mse_bias_free"),
    ({"loss": "mse", "bias": True, "wd_b": 0.0}, "mse_free_bias"),
    ({"loss": "ce"}, "ce_etf"),
    ({"loss": "ce", "bias": True}, "ce_etf"),
    ({"loss": "ls", "smoothing": 0.2}, "ls_etf"),
    ({"loss": "mse", "wd_W": 2e-2, "wd_H": 1e-3}, "mse_bias_free"),
    ({"loss": "mse", "counts": (12, 6, 3, 2)}, "mse_bias_free"),
])
def test_lbfgs_float64_reaches_closed_form(tmp_path, kw, target):
    s = run(tmp_path, optimizer="lbfgs", dtype="float64", **kw)
    assert s["status"] == "ok" and s["theory"]["name"] == target and s["theory"]["applies"]
    for key in ("loss", "W_norm_sq", "H_norm_sq"):
        assert s["rel_gap"][key] < 1e-8, key
    assert s["final"]["nc1"] < 1e-10 and s["final"]["nc4"] == 0
    assert s["converged"]


def test_gd_float32_reaches_closed_form(tmp_path):
    s = run(tmp_path, loss="mse", steps=3000)
    for key in ("loss", "W_norm_sq", "H_norm_sq"):
        assert s["rel_gap"][key] < 1e-3, key
    assert s["final"]["nc1"] < 1e-3 and s["final"]["nc2"] < 1e-2 and s["final"]["nc3"] < 1e-2


def test_sgd_and_adam_collapse(tmp_path):
    for opt in ("sgd", "adam"):
        s = run(tmp_path, optimizer=opt, steps=1500, batch_size=10 if opt == "sgd" else None)
        assert s["status"] == "ok" and s["final"]["nc1"] < 1e-2, opt


def test_run_directory_contract(tmp_path):
    s = run(tmp_path, steps=50)
    out = tmp_path / "run"
    summary = json.loads((out / "summary.json").read_text())
    for key in ("config", "final", "theory", "gap", "steps", "seconds", "converged"):
        assert key in summary
    for key in ("K", "n", "counts", "d", "loss", "wd_W", "wd_H", "wd_b", "bias"):
        assert key in summary["config"]
    for key in ("loss", "accuracy", "nc1", "nc2", "nc3", "nc4", "W_norm_sq", "H_norm_sq"):
        assert key in summary["final"]
    assert summary["theory"]["name"] == "mse_bias_free" and "loss" in summary["theory"]["predicted"]
    config = json.loads((out / "config.json").read_text())
    assert config["environment"]["torch"] and config["device_used"] == "cpu"
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert rows[0]["step"] == "0" and rows[-1]["step"] == "50"
    assert {"loss", "nc1", "nc2", "nc3", "nc4", "W_norm_sq", "grad_norm"} <= set(rows[0])
    assert s["steps"] == 50


def test_same_seed_same_numbers(tmp_path):
    a = run(tmp_path / "a", steps=30, seed=3)["final"]
    b = run(tmp_path / "b", steps=30, seed=3)["final"]
    c = run(tmp_path / "c", steps=30, seed=4)["final"]
    assert a == b and a != c


def test_divergence_stops_with_step_and_last_finite_loss(tmp_path):
    s = run(tmp_path, lr=500.0, steps=2000)
    assert s["status"] == "diverged" and not s["converged"]
    div = s["divergence"]
    assert div["step"] < 2000 and div["last_finite_step"] == div["step"] - 1
    assert div["last_finite_loss"] > 0
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert len(rows) >= 1 and all(r["loss"] not in ("nan", "inf") for r in rows)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


def test_divergence_seen_only_at_an_evaluation(tmp_path):
    # one huge step: the loss before it is finite, the parameters after it are not
    s = run(tmp_path, K=2, lr=1e35, init_scale=1e6, steps=1)
    assert s["status"] == "diverged" and s["divergence"]["step"] == 1
    assert s["divergence"]["last_finite_step"] == 0


def test_balanced_counts_use_their_own_n(tmp_path):
    a = run(tmp_path / "a", counts=(5, 5, 5, 5), loss="ce", steps=1)
    b = run(tmp_path / "b", K=4, n=5, loss="ce", steps=1)
    assert a["theory"]["predicted"] == b["theory"]["predicted"]
    assert a["config"]["n"] == 5 and run(tmp_path / "c", counts=(5, 3), steps=1)["config"]["n"] is None


def test_tol_stops_early(tmp_path):
    s = run(tmp_path, optimizer="lbfgs", dtype="float64", tol=1e-6, steps=400)
    assert s["final"]["grad_norm"] <= 1e-6 and s["steps"] < 400


def test_without_weight_decay_no_target_and_no_certificate(tmp_path):
    s = run(tmp_path, wd_W=0.0, wd_H=0.0, wd_b=0.0, steps=10)
    assert not s["theory"]["applies"] and s["gap"] == {}
    assert not s["certificate"]["applies"] and "wd_W" in s["certificate"]["reason"]


def test_no_closed_form_falls_back_to_the_convex_optimum(tmp_path):
    s = run(tmp_path, bias=True, wd_b=1e-3, counts=(8, 4, 2), steps=10)
    assert s["theory"]["name"] == "convex_optimum" and "loss" in s["theory"]["predicted"]
    assert s["certificate"]["applies"] and s["certificate"]["gap"] > 0  # 10 steps: far from the optimum


def test_config_json_reruns_the_same_run(tmp_path):
    first = run(tmp_path / "a", steps=40, counts=(6, 4, 3), loss="ce", bias=True)
    config = json.loads((tmp_path / "a" / "run" / "config.json").read_text())
    again = ufm.run(SimConfig.from_dict(config), tmp_path / "b", progress=False).summary
    assert again["final"] == first["final"]
