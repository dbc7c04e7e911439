"""`python -m ufm.sweep`: grid expansion, one-line bad input, failures recorded without stopping the others,
restarts that skip finished runs, and the same table from the local pool and a local Dask cluster."""

import csv
import json
import os

import pytest
import torch

import ufm
from ufm.cli.sweep import main
from ufm.config import SimConfig
from ufm.sweeps.grid import config_id, expand, parse_assignments, read_spec
from ufm.sweeps.runner import plan, run_sweep

SMALL = {"K": 3, "n": 4, "d": 5, "steps": 60, "certificate": False}


def test_grid_expands_in_order_with_the_wd_alias(tmp_path):
    spec = tmp_path / "grid.toml"
    spec.write_text('steps = 60\nK = 3\n[grid]\nwd = [1e-4, 1e-3]\nloss = ["ce", "mse"]\n')
    fixed, grid = read_spec(spec)
    cfgs = expand(fixed, grid)
    assert [(c.wd_W, c.wd_H, c.wd_b, c.loss.name) for c in cfgs] == [
        (1e-4, 1e-4, 1e-4, "ce"), (1e-4, 1e-4, 1e-4, "mse"), (1e-3, 1e-3, 1e-3, "ce"), (1e-3, 1e-3, 1e-3, "mse")]
    assert all(c.steps == 60 and c.K == 3 for c in cfgs)
    assert len({config_id(c) for c in cfgs}) == 4 and config_id(cfgs[0]) == config_id(expand(fixed, grid)[0])
    # explicit blocks win over the alias
    assert expand({"wd": 1e-3, "wd_b": 0.0}, {"seed": [0]})[0].wd_b == 0.0
    assert parse_assignments(["K=4,10", "bias=true", "loss=ce"]) == {"K": [4, 10], "bias": [True], "loss": ["ce"]}


def test_plan_batches_compatible_configurations():
    cfgs = expand(SMALL, {"wd": [1e-4, 1e-3, 1e-2], "loss": ["ce", "mse"], "optimizer": ["gd", "lbfgs"]})
    tasks = plan(cfgs, batch_size=2)
    assert sorted(i for t in tasks for i in t) == list(range(len(cfgs)))
    for t in tasks:
        assert len(t) <= 2 and len({(cfgs[i].loss.name, cfgs[i].optimizer) for i in t}) == 1
        if cfgs[t[0]].optimizer == "lbfgs":
            assert len(t) == 1  # no batched step for L-BFGS


@pytest.mark.parametrize("argv, message", [
    (["--out", "OUT"], "give a grid file"),
    (["--grid", "K", "--out", "OUT"], "KEY=V1,V2"),
    (["--grid", "colour=red", "--out", "OUT"], "unknown setting"),
    (["--grid", "K=1,4", "--out", "OUT"], "--K must be at least 2"),
    (["missing.toml", "--out", "OUT"], "cannot read"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([a.replace("OUT", str(tmp_path / "s")) for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def read_table(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the failing configuration asks for a missing CUDA")
def test_failures_are_recorded_and_a_restart_skips_finished_runs(tmp_path):
    cfgs = expand(SMALL, {"wd": [1e-4, 1e-3], "seed": [0, 1], "device": ["cpu", "cuda"]})
    out = tmp_path / "sweep"
    rows = run_sweep(cfgs, out, workers=1, progress=False)
    assert sum(r["status"] == "ok" for r in rows) == 4 and sum(r["status"] == "failed" for r in rows) == 4
    assert all("CUDA is not available" in r["error"] for r in rows if r["status"] == "failed")
    first = read_table(out / "results.csv")
    # a sweep killed before its last run: that run's summary is missing; the restart runs only it
    ok = [r["id"] for r in rows if r["status"] == "ok"]
    (out / "runs" / ok[0] / "summary.json").unlink()
    stamps = {i: os.stat(out / "runs" / i / "summary.json").st_mtime_ns for i in ok[1:]}
    run_sweep(cfgs, out, workers=1, progress=False)
    assert (out / "runs" / ok[0] / "summary.json").exists()
    assert {i: os.stat(out / "runs" / i / "summary.json").st_mtime_ns for i in ok[1:]} == stamps
    again = read_table(out / "results.csv")
    assert [r for r in again if r["id"] != ok[0]] == [r for r in first if r["id"] != ok[0]]
    # the rerun went alone, not in its batch of 4: the same numbers up to float32 rounding
    redo, orig = (next(r for r in t if r["id"] == ok[0]) for t in (again, first))
    assert float(redo["objective"]) == pytest.approx(float(orig["objective"]), rel=1e-5)


def test_local_pool_and_local_dask_cluster_give_the_same_table(tmp_path):
    pytest.importorskip("distributed")
    cfgs = expand(SMALL, {"wd": [1e-4, 1e-3, 1e-2], "loss": ["ce", "mse"]})
    run_sweep(cfgs, tmp_path / "pool", workers=2, batch_size=2, progress=False)
    run_sweep(cfgs, tmp_path / "dask", workers=2, batch_size=2, dask="local", progress=False)
    pool, dask = read_table(tmp_path / "pool" / "results.csv"), read_table(tmp_path / "dask" / "results.csv")
    assert pool == dask and len(pool) == 6 and all(r["status"] == "ok" for r in pool)


@pytest.mark.parametrize("argv, message", [
    (["--grid", "K=4.5"], "K must be an integer"),
    (["--grid", "bias=yes"], "bias must be a bool"),
    (["--set", "counts=a,b", "--grid", "seed=0"], "counts must be an integer"),
    (["--set", "hierarchy=5", "--grid", "seed=0"], "hierarchy must be a str"),
    (["--grid", "seed=0", "--dask", "nowhere"], "scheduler address"),
])
def test_mistyped_settings_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path / "s")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_equal_settings_written_differently_are_one_configuration():
    cfgs = expand({"steps": 10}, {"lr": [1, 1.0], "K": [4, 4.0], "wd": [1e-4, 1e-4]})
    assert len(cfgs) == 1 and cfgs[0].lr == 1.0 and cfgs[0].K == 4
    # --set keeps commas: a tree spec is one value
    from ufm.sweeps.grid import parse_settings
    assert parse_settings(["hierarchy=balanced:2,5"]) == {"hierarchy": "balanced:2,5"}


def test_an_interrupted_run_is_not_finished(tmp_path):
    from ufm.sweeps.runner import finished

    run = tmp_path / "r"
    run.mkdir()
    assert not finished(run)
    core = {"final": {}, "theory": {"name": "none", "applies": False}, "converged": False}
    (run / "summary.json").write_text(json.dumps({"status": "interrupted", **core}))
    assert not finished(run)
    (run / "summary.json").write_text(json.dumps({"status": "diverged", **core}))
    assert finished(run)


CORRUPT = [b'{"status": "ok", "final": {', b"\x00\xff\xfe binary", b'{"status":"ok"}', b"[1,2]", b""]


def test_a_corrupted_summary_is_rerun_and_named(tmp_path, caplog):
    """A truncated, binary, incomplete or non-object summary.json used to stop every restart of the sweep: each such
    run is now treated as unfinished (one warning naming its file, on the "ufm" logger), run again, and the table is
    whole."""
    fixed = {"K": 3, "n": 4, "d": 5, "steps": 20, "certificate": False}
    grid = {"wd": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]}
    rows = ufm.sweep(grid, tmp_path, fixed=fixed, workers=1, progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 5
    bad = [tmp_path / "runs" / r["id"] / "summary.json" for r in rows]
    for path, content in zip(bad, CORRUPT, strict=True):
        path.write_bytes(content)
    rows = ufm.sweep(grid, tmp_path, fixed=fixed, workers=1, progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 5
    err = caplog.text
    for path in bad:
        assert str(path) in err and json.loads(path.read_text())["status"] == "ok"  # named, rerun, valid again


def test_a_second_grid_in_the_same_folder_is_merged(tmp_path):
    """Reusing --out with another grid used to drop the first grid's rows from results.csv: now both are listed."""
    fixed = {"n": 4, "d": 5, "steps": 20, "certificate": False}
    ufm.sweep({"K": [3, 4]}, tmp_path, fixed=fixed, workers=1, progress=False)
    rows = ufm.sweep({"K": [5]}, tmp_path, fixed=fixed, workers=1, progress=False)
    assert sorted(r["K"] for r in rows) == [3, 4, 5] and all(r["status"] == "ok" for r in rows)
    with (tmp_path / "results.csv").open() as f:
        assert sorted(int(r["K"]) for r in csv.DictReader(f)) == [3, 4, 5]


@pytest.mark.parametrize("argv,message", [
    (["--grid", "K=4", "--grid", "K=5"], "--grid K is given twice"),
    (["--grid", "K=4", "--set", "K=10"], "both a fixed setting and a grid axis"),
    (["--grid", "K=4", "--set", "steps=5", "--set", "steps=6"], "--set steps is given twice"),
])
def test_conflicting_grid_keys_are_refused(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_killed_sweep_leaves_no_worker_behind(tmp_path):
    """SIGKILL of the sweep process used to orphan its pool workers: they now die with it (PR_SET_PDEATHSIG on
    Linux, else a thread watching the parent)."""
    import signal
    import subprocess
    import sys
    import time

    argv = [sys.executable, "-m", "ufm.sweep", "--grid", "K=3,4,5,6", "--set", "steps=200000", "--set", "n=4",
            "--set", "d=5", "--set", "certificate=false", "--set", "optimizer=adam", "--workers", "2", "--quiet",
            "--out", str(tmp_path)]
    proc = subprocess.Popen(argv, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.DEVNULL)
    children: list[int] = []
    for _ in range(1200):  # wait (up to ~2 min) until the workers have started runs
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        children = [int(p) for p in out]
        if len(list(tmp_path.glob("runs/*/config.json"))) >= 2:
            break
        time.sleep(0.1)
    assert children, "the sweep started no worker"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    alive = children
    for _ in range(300):  # the kernel's signal is immediate; allow time for the fallback thread
        alive = [p for p in alive if _alive(p)]
        if not alive:
            break
        time.sleep(0.1)
    assert not alive, f"orphaned workers {alive}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_config_ids_survive_upgrades():
    """Ids recorded before LossConfig and the focal loss existed: a restarted sweep finds its runs."""
    assert config_id(SimConfig()) == "1c95ad2f0158165f"
    assert config_id(SimConfig.from_dict(dict(K=4, loss="ls", smoothing=0.2, wd_W=1e-3))) == "e8ce83036b954420"
    focal = SimConfig.from_dict(dict(loss="focal", focal_gamma=1.0))
    assert config_id(focal) != config_id(SimConfig.from_dict(dict(loss="focal", focal_gamma=2.0)))
