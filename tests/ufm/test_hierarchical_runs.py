"""UFM runs under the hierarchical losses end at their predicted optimum (DESIGN §5.2–5.4)."""

import pytest

import ufm
from ufm.cli.simulate import main
from ufm.config import SimConfig


def run(tmp_path, **kw):
    cfg = SimConfig.from_dict(dict(**{"K": 6, "n": 5, "d": 8, "wd_W": 5e-3, "wd_H": 5e-3, "wd_b": 5e-3,
                       "hierarchy": "balanced:2,3", "optimizer": "lbfgs", "dtype": "float64", **kw}))
    return ufm.run(cfg, tmp_path / "run", progress=False, overwrite=True).summary  # one folder per test, reused


def test_haframe_run_reaches_the_fixed_frame_optimum(tmp_path):
    """W fixed to the frame: GD/L-BFGS on H ends at the per-class optimum of analysis.frames."""
    s = run(tmp_path, loss="haframe")
    assert s["theory"]["name"] == "haframe_optimum"
    assert s["rel_gap"]["loss"] < 1e-10 and s["rel_gap"]["H_norm_sq"] < 1e-7
    assert s["rel_gap"]["angular_mean"] < 1e-6 and s["rel_gap"]["hier_nc2"] < 1e-6
    assert s["final"]["nc1"] < 1e-12 and s["final"]["W_norm_sq"] == pytest.approx(6, rel=1e-14)
    assert s["grams"]["means_cos"]["rel_error"] < 1e-7
    assert s["hierarchy"]["frame"]["s_min_is_psd_bound"] and s["final"]["angular_mean_W"] < 1e-12


def test_soft_labels_run_reaches_the_certified_optimum(tmp_path):
    s = run(tmp_path, loss="soft", beta=3.0)
    assert s["theory"]["name"] == "convex_optimum"
    assert abs(s["certificate"]["rel_gap"]) < 1e-9
    assert s["rel_gap"]["hier_nc2"] < 1e-5 and s["rel_gap"]["nc2"] < 1e-4
    # soft labels pull the means from the simplex ETF toward the hierarchy's frame
    ce = run(tmp_path / "ce", loss="ce")
    assert s["final"]["hier_nc2"] < ce["final"]["hier_nc2"] and s["final"]["nc2"] > ce["final"]["nc2"]


@pytest.mark.parametrize("weighting", ["height", "depth"])
def test_hxe_run_reports_geometry_and_collapse(tmp_path, weighting):
    s = run(tmp_path, loss="hxe", alpha=0.5, hxe_weighting=weighting)
    assert not s["theory"]["applies"] and "not convex" in s["theory"]["reason"]
    h = s["hierarchy"]
    assert h["nc1_collapsed"] and h["hxe"]["weighting"] == weighting
    assert {"mistake_severity", "hier_dist@1", "hier_dist@5", "angular_mean", "hier_nc2"} <= set(h["measured"])
    assert s["converged"]


def test_hierarchy_sets_K_on_the_command_line(tmp_path, capsys):
    assert main(["--hierarchy", "balanced:2,3", "--loss", "hxe", "--n", "3", "--d", "8", "--steps", "20",
                 "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "hierarchy balanced:2,3 (6 classes, height 2)" in out and "NC1 → 0" in out
