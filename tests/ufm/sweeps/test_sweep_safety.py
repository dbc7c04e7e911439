"""Sweeps where users run them: the call checked at the door, registered losses in every mode, two sweeps
writing into one folder at once, Ctrl-C with runs queued, and a plain script without a main guard."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import ufm
from ufm.sweeps.locks import FileLock, Presence
from ufm.sweeps.workers import guarded

FIXED = {"K": 3, "n": 4, "d": 5, "steps": 20, "certificate": False}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def read_table(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def status_on_disk(run: Path) -> str:
    """What the run directory says: its summary's status, "failed" (error.txt only) or "pending"."""
    if (run / "summary.json").exists():
        return json.loads((run / "summary.json").read_text())["status"]
    return "failed" if (run / "error.txt").exists() else "pending"


@pytest.mark.parametrize("kwargs, kind, name", [
    ({"workers": 0}, ValueError, "workers"),
    ({"workers": 1.5}, TypeError, "workers"),
    ({"workers": True}, TypeError, "workers"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": "8"}, TypeError, "batch_size"),
    ({"grid": {"wd": "1e-3"}}, TypeError, "grid['wd']"),
    ({"grid": {"wd": 1e-3}}, TypeError, "grid['wd']"),
    ({"grid": {"wd": []}}, ValueError, "grid['wd']"),
    ({"grid": [("wd", [1e-3])]}, TypeError, "grid"),
    ({"grid": {"colour": ["red"]}}, ValueError, "'colour'"),
    ({"fixed": [("K", 3)]}, TypeError, "fixed"),
    ({"fixed": {"K": 3, "colr": 1}}, ValueError, "'colr'"),
    ({"fixed": {"wd": 1e-3}}, ValueError, "'wd'"),  # both fixed and a grid axis
    ({"out": 3}, TypeError, "out"),
    ({"out": ""}, ValueError, "out"),
    ({"dask": 8786}, TypeError, "dask"),
])
def test_bad_arguments_are_refused_at_the_door(kwargs, kind, name, tmp_path):
    """workers=0 used to raise ZeroDivisionError, batch_size=0 failed inside range(), and a string axis was swept
    over its characters: each is now the exception of its kind naming the argument, before anything is written."""
    call = {"grid": {"wd": [1e-3]}, "out": tmp_path / "s", "fixed": FIXED, "workers": 1, "progress": False,
            **kwargs}
    with pytest.raises(kind) as e:
        ufm.sweep(call.pop("grid"), call.pop("out"), **call)
    assert name in str(e.value), str(e.value)
    if kind is ValueError:
        assert not isinstance(e.value, TypeError)
    assert not (tmp_path / "s").exists()


def test_numpy_axes_are_taken_as_their_numbers(tmp_path):
    np = pytest.importorskip("numpy")
    rows = ufm.sweep({"wd": np.array([1e-3, 1e-2]), "seed": np.arange(1)}, tmp_path, fixed=FIXED, workers=1,
                     progress=False)
    assert [(r["wd_W"], r["seed"], r["status"]) for r in rows] == [(1e-3, 0, "ok"), (1e-2, 0, "ok")]


def test_duplicate_outs_are_refused(tmp_path):
    """Two runs into one directory: the second used to overwrite the first silently."""
    cfgs = [ufm.SimConfig(K=3, n=4, d=5, loss="mse", wd=w, steps=20, certificate=False) for w in (1e-3, 1e-2)]
    with pytest.raises(ValueError, match=r"outs\[0\] and outs\[1\] are the same directory"):
        ufm.run_batch(cfgs, outs=[tmp_path / "same", tmp_path / "x" / ".." / "same"])
    assert not (tmp_path / "same").exists()


def square_hinge(z, y):  # importable (tests.ufm.sweeps.test_sweep_safety), so workers can load it
    return torch.relu(1 + z - z.gather(1, y[:, None])).scatter(1, y[:, None], 0.0).square().sum(1)


class CountK:
    """A registered check defined in an importable module: it reaches the worker processes."""

    NAME, ORDER = "count_k", 99

    def applies(self, run):
        return True

    def compute(self, run):
        return {"K": run.cfg.K}

    def lines(self, block):
        return [f"count_k: {block['K']}"]


@pytest.fixture
def registered():
    ufm.register_loss("sq_hinge_t", square_hinge, convex=True, replace=True)
    ufm.register_check(CountK())
    yield
    ufm.unregister_loss("sq_hinge_t")
    ufm.unregister_check("count_k")


def test_a_registered_loss_and_check_reach_the_workers(tmp_path, registered, caplog):
    """A registered loss failed in every sweep ("--loss must be one of …"), even with workers=1: it now runs in
    this process (workers=1) and on a pool (workers=2), with the registered check in its summary."""
    grid = {"loss": ["ce", "sq_hinge_t"]}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        with caplog.at_level("WARNING", logger="ufm"):
            rows = ufm.sweep(grid, out, fixed=FIXED, workers=workers, progress=False)
        assert [(r["loss"], r["status"], r["error"]) for r in rows] == [("ce", "ok", ""), ("sq_hinge_t", "ok", "")]
        for r in rows:
            assert json.loads((out / "runs" / r["id"] / "summary.json").read_text())["count_k"] == {"K": 3}
    assert not caplog.records  # nothing kept the pool from running


def test_a_loss_workers_cannot_load_runs_here_with_one_line(tmp_path, caplog):
    """A lambda cannot reach a worker process: with workers=1 the sweep runs here without a pool (and without a
    word); with more, it runs here all the same and says why, once."""
    ufm.register_loss("lam", lambda z, y: z.square().sum(1), replace=True)
    try:
        with caplog.at_level("WARNING", logger="ufm"):
            alone = ufm.sweep({"loss": ["lam"]}, tmp_path / "one", fixed=FIXED, workers=1, progress=False)
            assert [r["status"] for r in alone] == ["ok"] and not caplog.records
            rows = ufm.sweep({"loss": ["lam"], "wd": [1e-3, 1e-2]}, tmp_path / "two", fixed=FIXED, workers=2,
                             progress=False)
    finally:
        ufm.unregister_loss("lam")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert [r.getMessage() for r in caplog.records] == [
        "running the 2 configurations in this process, not on 2 workers: the registered loss 'lam' "
        "cannot be sent to worker processes (" + caplog.records[0].getMessage().split("(", 1)[1]]
    assert "lambda" in caplog.records[0].getMessage() and "\n" not in caplog.records[0].getMessage()


def test_the_main_guard_is_read_from_the_source():
    src = textwrap.dedent("""\
        import ufm
        def main():
            ufm.sweep({}, "a")
        if __name__ == "__main__":
            main()
        if "__main__" != __name__:
            pass
        else:
            main()
        main()
    """)
    assert [guarded(src, line) for line in (3, 5, 7, 9, 10)] == [False, True, False, True, False]


def test_locks_exclude_and_a_dead_holder_leaves_none(tmp_path):
    path = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ufm.sweeps.locks import FileLock; "
                               f"assert FileLock({str(path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    lock = FileLock(path)
    assert not lock.acquire()
    holder.kill()
    holder.wait()
    assert lock.acquire()  # the kernel dropped the dead process's lock; the file left behind is no obstacle
    lock.release()
    first = Presence(tmp_path)
    stale = tmp_path / ".locks" / "sweep-elsewhere-1-0.lock"
    stale.write_text("")  # a presence file whose sweep died
    second = Presence(tmp_path)
    assert len(second.others()) == 1 and not stale.exists()
    second.close()
    first.close()
    assert not list((tmp_path / ".locks").glob("sweep-*"))


SWEEP = [sys.executable, "-m", "ufm.sweep", "--set", "n=4", "--set", "d=5", "--set", "certificate=false",
         "--set", "optimizer=adam", "--batch-size", "1", "--quiet"]
COUNTS = re.compile(r"\((\d+) run now(?:, (\d+) by another sweep in this folder)?(?:, (\d+) finished before)?\)")

# a sweep in its own process, as `python -m ufm.sweep` with workers=1, that logs every run it computes
LOGGED = """
import os, sys
import ufm.api
from ufm.cli.sweep import main

real = ufm.api._run_batch  # what run and run_batch both call

def run_batch(cfgs, outs=None, **kw):
    for out in outs or ():
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (os.path.basename(str(out)) + "\\n").encode())
        os.close(fd)
    return real(cfgs, outs, **kw)

ufm.api._run_batch = run_batch
sys.exit(main(sys.argv[2:]))
"""


def test_two_sweeps_with_one_grid_compute_each_run_once(tmp_path):
    """Two sweeps of the same grid into one folder used to compute 11 of 12 runs twice: each run is now claimed by
    one of them, and the other waits for it."""
    argv = [*SWEEP[3:], "--grid", "K=3,4,5,6", "--grid", "seed=0,1,2", "--set", "steps=150", "--workers", "1",
            "--out", str(tmp_path / "s")]
    log = tmp_path / "computed.txt"
    procs = [subprocess.Popen([sys.executable, "-c", LOGGED, str(log), *argv], stderr=subprocess.PIPE, text=True,
                              env=ENV) for _ in range(2)]
    errs = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    computed = log.read_text().split()
    assert len(computed) == 12 and len(set(computed)) == 12, computed  # each run once, by one of the two
    ran = [int(COUNTS.search(e).group(1)) for e in errs]
    assert sum(ran) == 12, errs
    rows = read_table(tmp_path / "s" / "results.csv")
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}


def test_two_sweeps_with_different_grids_both_end_in_the_table(tmp_path):
    """Two sweeps of different grids into one folder used to leave results.csv with one grid's rows: the record
    and the table are now rewritten under a lock, from every run on disk."""
    out = tmp_path / "s"
    procs = [subprocess.Popen([*SWEEP, "--grid", grid, "--grid", "seed=0,1,2", "--set", "steps=150", "--workers",
                               workers, "--out", str(out)], stderr=subprocess.PIPE, text=True, env=ENV)
             for grid, workers in (("K=3,4", "2"), ("K=5,6", "1"))]  # a pool, and one in its own process
    errs = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    rows = read_table(out / "results.csv")
    assert sorted((int(r["K"]), int(r["seed"])) for r in rows) == [(k, s) for k in (3, 4, 5, 6) for s in (0, 1, 2)]
    assert {r["status"] for r in rows} == {"ok"}
    assert len(json.loads((out / "sweep.json").read_text())["configs"]) == 12


def test_ctrl_c_cancels_the_queued_runs_and_leaves_the_table_current(tmp_path):
    """After Ctrl-C about 5 queued runs still finished and results.csv was left stale: the queued tasks are now
    cancelled, the running runs end "interrupted", and the table matches the runs on disk."""
    out = tmp_path / "s"
    proc = subprocess.Popen([*SWEEP, "--grid", "K=3,4,5,6,7,8,9,10", "--set", "steps=1000", "--workers", "2",
                             "--out", str(out)], stderr=subprocess.PIPE, text=True, env=ENV)
    finished = []
    for _ in range(3000):  # until two runs have finished (at most about 5 min on a loaded machine)
        # done: params.pt is a run's last file (its summary is first written before the end-of-run checks)
        finished = [p for p in out.glob("runs/*/params.pt") if status_on_disk(p.parent) == "ok"]
        if len(finished) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    at_signal = len(finished)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate()[1]
    assert proc.returncode == 130, err
    assert "interrupted: queued runs cancelled" in err
    rows = read_table(out / "results.csv")
    assert len(rows) == 8
    on_disk = {r["id"]: status_on_disk(out / "runs" / r["id"]) for r in rows}
    assert {r["id"]: r["status"] for r in rows} == on_disk  # the table is current
    done = sum(s == "ok" for s in on_disk.values())
    # at most the two runs in progress at the signal could finish after it; the queued ones never started
    assert at_signal <= done <= at_signal + 2 < 8, (at_signal, on_disk)


def test_a_worker_that_dies_fails_its_own_run_and_not_the_queued_ones(tmp_path):
    """A worker killed mid-sweep (here by a loss that exits with 6 classes) broke the pool, and every configuration
    not yet finished was recorded failed, four of them never started. Now only the run that had started fails; the
    others run (in this process, with one line saying why) and end ok. A plain script, as a user runs it."""
    script = tmp_path / "dies.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
        import ufm
        from tests.custom_losses import dies_with_six_classes
        if __name__ == "__main__":
            ufm.register_loss("dies6", dies_with_six_classes, replace=True)
            rows = ufm.sweep({{"K": [3, 4, 5, 6, 7, 8, 9, 10]}}, {str(tmp_path / "s")!r}, workers=2, batch_size=1,
                             fixed={{"n": 4, "d": 5, "steps": 20, "certificate": False, "loss": "dies6"}},
                             progress=False)
            print(json.dumps({{int(r["K"]): r["status"] for r in rows}}))
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    status = {int(k): v for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}
    # K = 6 fails; the pool's shutdown may also kill the one run in progress on the other worker (failed too, with
    # the reason, retried by the next sweep); every run not yet started ends ok
    failed = sorted(k for k, v in status.items() if v == "failed")
    assert 6 in failed and len(failed) <= 2 and set(status.values()) <= {"ok", "failed"}, status
    assert all(status[k] == "ok" for k in (8, 9, 10)), status
    for k in failed:
        error = next((tmp_path / "s" / "runs").glob(f"*K{k}*/error.txt"), None)
        assert error is None or "a worker process died while this run was in progress" in error.read_text()
    assert len(read_table(tmp_path / "s" / "results.csv")) == 8
    again = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    status = {int(k): v for k, v in json.loads(again.stdout.strip().splitlines()[-1]).items()}
    assert status == {**{k: "ok" for k in (3, 4, 5, 7, 8, 9, 10)}, 6: "failed"}, status  # the retry: only K = 6
