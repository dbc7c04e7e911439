"""`ufm.run(cfg, out, resume=True)` and `python -m ufm.simulate --resume`: 40 steps, then resumed to 100, ends where
the uninterrupted 100-step run ends (float64, parameters and loss to 1e-12; GD, Adam, SGD on mini-batches); other
configurations, and a missing checkpoint, are refused with one line; a distributed run resumes on the same P and on
another one (re-sharded)."""

import dataclasses

import pytest
import torch
import torch.multiprocessing as mp

import ufm
from ufm.cli.simulate import main
from ufm.fit.checkpoint import CheckpointError

BASE = dict(K=3, n=4, d=5, loss="ce", wd=5e-3, dtype="float64", device="cpu", certificate=False, bias=True)
OPTS = {"gd": dict(optimizer="gd", lr=0.5), "adam": dict(optimizer="adam", lr=1e-2),
        "sgd_batch": dict(optimizer="sgd", lr=0.2, batch_size=6)}


def same(a, b, tol=1e-12):
    for k, v in a.params.items():
        torch.testing.assert_close(b.params[k], v, rtol=0, atol=tol, msg=k)
    assert abs(a.history[-1]["loss"] - b.history[-1]["loss"]) <= tol
    assert b.history[-1]["step"] == a.history[-1]["step"] == 100


@pytest.mark.parametrize("opt", list(OPTS))
def test_forty_steps_then_resumed_to_a_hundred_equals_the_uninterrupted_run(opt, tmp_path):
    cfg = ufm.SimConfig(steps=100, **BASE, **OPTS[opt])
    full = ufm.run(cfg, tmp_path / "full", progress=False)
    ufm.run(dataclasses.replace(cfg, steps=40), tmp_path / "r", progress=False)
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 40 and state["processes"] == 1 and state["params"]["H"].shape == (12, 5)
    again = ufm.run(cfg, tmp_path / "r", progress=False, resume=True)
    same(full, again)
    rows = (tmp_path / "r" / "history.csv").read_text().splitlines()
    assert rows[-1].split(",")[0] == "100" and len(rows) == len(again.history) + 1


def test_refusals(tmp_path):
    cfg = ufm.SimConfig(steps=20, **BASE, **OPTS["adam"])
    with pytest.raises(CheckpointError, match="holds no checkpoint.pt"):
        ufm.run(cfg, tmp_path / "none", progress=False, resume=True)
    with pytest.raises(ValueError, match="needs out"):
        ufm.run(cfg, progress=False, resume=True)
    ufm.run(cfg, tmp_path / "r", progress=False)
    with pytest.raises(CheckpointError, match=r"another configuration: wd_W 0.005 \(checkpoint\) vs 0.01 \(now\)"):
        ufm.run(dataclasses.replace(cfg, wd_W=1e-2), tmp_path / "r", progress=False, resume=True)
    with pytest.raises(CheckpointError, match="holds step 20, beyond (--)?steps 10"):
        ufm.run(dataclasses.replace(cfg, steps=10), tmp_path / "r", progress=False, resume=True)
    lbfgs = ufm.SimConfig(steps=5, **{**BASE, "optimizer": "lbfgs", "lr": 1.0})
    ufm.run(lbfgs, tmp_path / "l", progress=False)
    assert not (tmp_path / "l" / "checkpoint.pt").exists()


def test_the_command_line_resumes_and_refuses_in_one_line(tmp_path, capsys):
    flags = ["--K", "3", "--n", "4", "--d", "5", "--loss", "ce", "--wd", "5e-3", "--dtype", "float64", "--device",
             "cpu", "--no-certificate", "--optimizer", "adam", "--lr", "1e-2", "--bias", "--quiet"]
    assert main([*flags, "--steps", "100", "--out", str(tmp_path / "full")]) == 0
    assert main([*flags, "--steps", "40", "--out", str(tmp_path / "r")]) == 0
    assert main([*flags, "--steps", "100", "--out", str(tmp_path / "r"), "--resume"]) == 0
    a = torch.load(tmp_path / "full" / "params.pt", weights_only=True)
    b = torch.load(tmp_path / "r" / "params.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-12)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([*flags, "--steps", "100", "--lr", "0.1", "--out", str(tmp_path / "r"), "--resume"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another configuration: lr 0.01 (checkpoint) vs 0.1 (now)" in err[0]
    with pytest.raises(SystemExit) as e:
        main([*flags, "--out", str(tmp_path / "empty"), "--resume"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no checkpoint.pt to continue" in err[0]


def test_a_distributed_run_resumes_on_the_same_and_on_another_process_count(tmp_path, caplog):
    from tests.ufm.distributed.test_parity import free_port
    from tests.ufm.distributed.workers import config, resumed

    mp.spawn(resumed, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    results = torch.load(tmp_path / "results.pt", weights_only=True)
    for name, got in results.items():
        for k, v in got["full"].items():
            torch.testing.assert_close(got["resumed"][k], v, rtol=0, atol=1e-12, msg=f"{name} {k}")
    # the 2-process checkpoint (whole H, H's Adam moments gathered) resumed on one process: re-sharded
    state = torch.load(tmp_path / "adam_ce" / "checkpoint.pt", weights_only=True)
    assert state["processes"] == 2 and state["step"] == 100
    one = ufm.run(config("adam_ce"), tmp_path / "one", progress=False)
    ufm.run(dataclasses.replace(config("adam_ce"), steps=40), tmp_path / "p1", distributed=False, progress=False)
    (tmp_path / "p1" / "checkpoint.pt").unlink()
    import shutil

    shutil.copy(tmp_path / "adam_ce-full" / "checkpoint.pt", tmp_path / "p1" / "checkpoint.pt")
    with caplog.at_level("WARNING", logger="ufm"):
        again = ufm.run(config("adam_ce"), tmp_path / "p1", progress=False, resume=True)
    assert "resumed the run of 2 processes on 1" in caplog.text and "re-sharded" in caplog.text
    for k, v in one.params.items():
        torch.testing.assert_close(again.params[k], v, rtol=0, atol=1e-10, msg=k)
