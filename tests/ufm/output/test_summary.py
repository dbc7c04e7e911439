"""summary.json's doubts and verdict (ufm.output.summary, ufm.output.table, issue 25): a run that does not reach its
target says why in `doubts` (how far, and a dropped class, an early stop, a saddle where it can tell); a target
that does not determine the geometry (label smoothing's tilt on the sphere) predicts only what it determines.
Float64 L-BFGS runs."""

import math

import pytest
import torch

import ufm
from analysis.theory import deep_linear_mse
from ufm.config import SimConfig
from ufm.output.summary import VERDICT_RTOL, dropped_classes, gap_doubt, reached
from ufm.output.table import verdict


def run(tmp_path, **kw):
    cfg = SimConfig.from_dict({"optimizer": "lbfgs", "dtype": "float64", **kw})
    return ufm.run(cfg, tmp_path / "run", progress=False)


def test_reached_judges_the_objective_or_else_the_largest_gap():
    assert reached({"loss": 1e-4, "nc2": 0.5}, True) and not reached({"loss": 1e-4}, False)
    assert not reached({"loss": 2 * VERDICT_RTOL, "nc1": 0.0}, True)
    assert reached({"nc1": 1e-12, "nc2": 1.1e-10}, True)  # HUG's simplex ETF predicts no objective
    assert not reached({"nc1": 0.0, "nc2": 0.3}, True) and not reached({}, True)


def test_a_target_without_an_objective_is_reached_on_its_gaps():
    """HUG at its simplex ETF (gaps ~1e-10, no objective predicted) read "did NOT reach … gap nan"."""
    s = {"status": "ok", "converged": True, "theory": {"name": "simplex_etf", "applies": True},
         "rel_gap": {"nc1": 1e-12, "nc2": 1.1e-10}, "doubts": []}
    assert verdict(s) == "verdict: the run reached the predicted optimum simplex_etf (largest gap 1.1e-10 on nc2)"


@pytest.mark.parametrize("gap, rel, grad_ok, dropped, saddle, expected", [
    (0.0154, 0.277, True, [3], False,
     "ended 27.7 % above the optimum: a local minimum or saddle, not the optimum (class 3 dropped)"),
    (0.0154, 0.277, False, [1, 3], False,
     "ended 27.7 % above the optimum: stopped before converging (crit not met); classes 1, 3 dropped"),
    (0.02, 0.0181, False, [], False, "ended 1.81 % above the optimum: stopped before converging (crit not met)"),
    (0.5, 1.0, True, [], True, "ended 100 % above the optimum: at the saddle W = H = 0"),
    (0.001, 0.05, True, [], False, "ended 5 % above the optimum: a local minimum or saddle, not the optimum"),
    (-0.003, 0.06, True, [], False,
     "ended 6 % below the predicted optimum dnc: dnc is not this problem's optimum (the run found a better point)"),
    (1e-6, 1e-5, False, [], False, "within 1.0e-05 (relative) of dnc's objective, but stopped before converging "
                                   "(crit not met)"),
])
def test_gap_doubt_says_how_far_and_why(gap, rel, grad_ok, dropped, saddle, expected):
    name = "dnc" if gap < 0 or rel < VERDICT_RTOL else "deep_linear_mse"
    assert gap_doubt({"loss": gap}, {"loss": rel}, grad_ok, "crit", dropped, saddle, name) == expected


def test_dropped_classes_reads_the_classifier_rows_and_the_class_means():
    cfg = SimConfig(K=3, n=2, d=2)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    H = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 2.0], [1e-4, 0.0], [-1e-4, 0.0]],
                     dtype=torch.float64)
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert dropped_classes({"H": H, "W": W}, y, cfg) == [2]  # class 2's mean is 0 (its features cancel)
    W[2] = 1e-7
    H[4:] = 1.0
    assert dropped_classes({"H": H, "W": W}, y, cfg) == [2]  # its row is ~0
    assert dropped_classes({"H": H, "W": torch.ones(3, 2, dtype=torch.float64)}, y, cfg) == []


def test_a_deep_linear_run_that_drops_its_one_sample_class_says_so(tmp_path):
    """`--counts 10,6,3,1 --depth 3 --wd-W 3e-3 --wd-M 1e-2 --wd-H 2e-3 --seed 0` (d = width = 8 here, L-BFGS):
    the run ends at a stationary point 27.7 % above deep_linear_mse's optimum with the one-sample class dropped; it
    is not converged, its doubts say how far and why, and so does the verdict."""
    counts, wd_W, wd_M, wd_H = (10, 6, 3, 1), 3e-3, 1e-2, 2e-3
    r = run(tmp_path, counts=counts, depth=3, d=8, width=8, loss="mse", bias=False, wd_W=wd_W, wd_M=wd_M,
            wd_H=wd_H, seed=0, steps=700)
    s = r.summary
    optimum = deep_linear_mse(counts, 8, 8, 3, wd_W, wd_H, wd_M).predicted["loss"]
    assert s["theory"]["name"] == "deep_linear_mse" and s["theory"]["predicted"]["loss"] == optimum
    assert s["final"]["loss"] / optimum - 1 == pytest.approx(0.277070257, rel=1e-6)
    assert s["final"]["suboptimality_estimate"] < 1e-10  # a small gradient: stationary, yet not the optimum
    assert s["doubts"][0] == ("ended 27.7 % above the optimum: a local minimum or saddle, not the optimum "
                              "(class 3 dropped)")
    assert not s["converged"] and s["doubts"][0] in s["converged_criterion"]
    assert "did NOT reach" in r.table() and s["doubts"][0] in r.table().splitlines()[-1]
    # class 3 dropped, read from params.pt: its classifier row and its one sample's last-layer feature are ~0
    p = torch.load(tmp_path / "run" / "params.pt", weights_only=True)
    X = p["H"] @ p["M1"].T @ p["M2"].T  # samples in class order: class 3's is the last
    norms, features = p["W"].norm(dim=1), X.norm(dim=1)
    assert norms[3] < 1e-4 * norms[:3].min() and features[-1] < 1e-4 * features[:-1].min()
    assert norms[3] * features[-1] < 1e-6 * (norms[:3] * features[[0, 10, 16]]).max()


def test_label_smoothing_tilt_on_the_sphere_predicts_only_the_value_and_the_margin(tmp_path):
    """`--K 4 --n 3 --d 5 --loss ls --smoothing 0.3 --normalize both --temperature 0.2 --optimizer lbfgs --dtype
    float64 --seed 1`: u* = log((K − α(K−1))/α) < K/((K−1)τ), so every point whose margins are all u* is optimal —
    a continuum, some far from collapse. The run ends at the optimal value with NC1 ≈ 0.17; the target predicts
    the value, the margin and the accuracy, no NC numbers, says the optimum is not unique, and nothing is doubted."""
    K, alpha, tau = 4, 0.3, 0.2
    r = run(tmp_path, K=K, n=3, d=5, loss="ls", smoothing=alpha, normalize="both", temperature=tau, seed=1)
    s = r.summary
    u = math.log((K - alpha * (K - 1)) / alpha)
    value = math.log1p((K - 1) * math.exp(-u)) + alpha * (K - 1) * u / K
    t = s["theory"]
    assert t["applies"] and t["unique"] is False and "not unique" in t["note"]
    assert set(t["predicted"]) == {"loss", "logit_gap", "accuracy"}
    assert t["predicted"]["loss"] == pytest.approx(value, rel=1e-14)
    assert t["predicted"]["logit_gap"] == pytest.approx(u, rel=1e-14)
    assert s["rel_gap"]["loss"] < 1e-12 and not any(k.startswith("nc") for k in s["gap"])
    assert s["final"]["nc1"] > 0.1  # an optimum far from collapse
    assert s["doubts"] == [] and s["converged"] and s["status"] == "ok"
    assert "note: the optimum is not unique" in r.table()
    assert r.table().splitlines()[-1].startswith("verdict: the run reached the predicted optimum sphere_etf")
