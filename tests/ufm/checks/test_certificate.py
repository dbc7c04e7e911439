"""The certificate block when the convex program cannot be formed (ufm.checks.certificate, issue 25): a registered
loss declared convex that is concave costs the certificate only — the run ends, summary.json holds
{"failed": why} under "certificate", the table says so in one line, and params.pt is written."""

import json

import torch

import ufm
from ufm.config import SimConfig


def concave(z, y):
    """−‖z‖²: concave in the logits (its program's value 0 at the origin used to end in a ZeroDivisionError)."""
    return -z.square().sum(1)


def test_a_concave_loss_declared_convex_fails_the_certificate_not_the_run(tmp_path):
    ufm.register_loss("concave_probe", concave, convex=True, replace=True)
    try:
        r = ufm.run(SimConfig(K=3, n=4, d=5, loss="concave_probe", wd=1e-2, steps=50, dtype="float64"),
                    tmp_path / "run", progress=False)
    finally:
        ufm.unregister_loss("concave_probe")
    assert r.status == "ok"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt", "config.json", "history.csv",
                                                                    "params.pt", "summary.json"]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(s["certificate"]) == {"failed"}
    assert s["certificate"]["failed"].startswith("ValueError: custom loss 'concave_probe' is not convex in the logits")
    assert s["theory"]["applies"] is False  # no closed form, and no convex optimum to predict from
    lines = [line for line in r.table().splitlines() if line.startswith("certificate")]
    assert lines == [f"certificate: the check failed ({s['certificate']['failed']})"]
    params = torch.load(tmp_path / "run" / "params.pt", weights_only=True)
    assert params["W"].shape == (3, 5) and params["H"].shape == (12, 5)
    assert "failed" not in s["milestones"]  # the other checks still ran
