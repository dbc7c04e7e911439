"""TensorBoard output of a sweep (`sweep(..., tensorboard=DIR)`, `python -m ufm.sweep --tensorboard DIR`): each
run computed now writes its scalars into DIR/<run id>, equal to its history.csv (TensorBoard's own reader)."""

import json
import os
import sys

import pytest

pytest.importorskip("tensorboard")

from tests.ufm.output.test_tensorboard import assert_history, assert_summary  # noqa: E402
from ufm.api import sweep  # noqa: E402 - not ufm.sweep: importing the module ufm.sweep rebinds it
from ufm.output.rundir import read_history  # noqa: E402

FIXED = {"K": 3, "n": 4, "d": 5, "steps": 30, "certificate": False, "dtype": "float64", "loss": "mse"}


def check_runs(out, tb, ids):
    assert sorted(p.name for p in tb.iterdir()) == sorted(ids)
    for run_id in ids:
        run = out / "runs" / run_id
        logged = assert_history(tb / run_id, run, "step")
        summary = json.loads((run / "summary.json").read_text())
        assert_summary(logged, summary, ("final", "gap"), int(read_history(run)[-1]["step"]))


def test_a_library_sweep_logs_each_run_under_its_id(tmp_path):
    rows = sweep({"wd": [1e-3, 1e-2]}, tmp_path / "sweep", fixed=FIXED, workers=1, progress=False,
                     tensorboard=tmp_path / "tb")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    check_runs(tmp_path / "sweep", tmp_path / "tb", [r["id"] for r in rows])


def test_the_sweep_command_line_logs_each_run_under_its_id(tmp_path):
    from ufm.cli.sweep import main

    flags = ["--grid", "wd=1e-3,1e-2", *[f"--set={k}={v}" for k, v in FIXED.items()], "--workers", "1", "--quiet",
             "--out", str(tmp_path / "sweep"), "--tensorboard", str(tmp_path / "tb")]
    assert main(flags) == 0
    ids = [p.name for p in (tmp_path / "sweep" / "runs").iterdir()]
    assert len(ids) == 2
    check_runs(tmp_path / "sweep", tmp_path / "tb", ids)


def test_a_pool_sweep_logs_from_its_worker_processes(tmp_path):
    """workers=2: the tensorboard directory travels with each task to the spawned workers."""
    rows = sweep({"wd": [1e-3, 1e-2], "loss": ["mse", "ce"]}, tmp_path / "sweep",
                     fixed={k: v for k, v in FIXED.items() if k != "loss"}, workers=2, progress=False,
                     tensorboard=tmp_path / "tb")
    assert [r["status"] for r in rows] == ["ok"] * 4
    check_runs(tmp_path / "sweep", tmp_path / "tb", [r["id"] for r in rows])
    writers = {int(f.name.split(".")[-2]) for f in (tmp_path / "tb").glob("*/events.out.tfevents.*")}
    assert writers and os.getpid() not in writers  # events.out.tfevents.TIME.HOST.PID.N: written by the workers


def test_without_the_package_a_sweep_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"^tensorboard= needs the tensorboard package.*pip install 'ufm\[tens"):
        sweep({"wd": [1e-3]}, tmp_path / "sweep", fixed=FIXED, workers=1, tensorboard=tmp_path / "tb")
    assert not (tmp_path / "sweep").exists()
    from ufm.cli.sweep import main

    with pytest.raises(SystemExit) as e:
        main(["--grid", "wd=1e-3", "--out", str(tmp_path / "sweep"), "--tensorboard", str(tmp_path / "tb")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "--tensorboard needs the tensorboard package" in err and "pip install 'ufm[tensorboard]'" in err
    with pytest.raises(TypeError, match="^tensorboard must be None or a directory"):
        sweep({"wd": [1e-3]}, tmp_path / "sweep", fixed=FIXED, workers=1, tensorboard=7)
