"""The thread rule (ufm.fit.threads): one thread for small problems, the idle cores for large ones, an explicit
OMP_NUM_THREADS or threads= respected, torch's setting restored after a run."""

import os
import subprocess
import sys
import time

import pytest
import torch

import ufm
from ufm.config import SimConfig
from ufm.fit import threads
from ufm.fit.threads import SMALL_WORK, auto_threads, thread_count, work


def test_work_is_the_largest_product():
    assert work(SimConfig(K=10, n=100, d=512)) == 1000 * 512 * 10
    assert work(SimConfig(K=4, n=10, d=8, depth=3, width=100)) == 40 * 100 * 100  # a wide hidden layer


def test_the_rule(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "idle_cores", lambda: 7)
    assert auto_threads(SimConfig(K=10, n=100, d=512)) == 1  # the default run: 5e6 < SMALL_WORK
    big = SimConfig(K=100, n=100, d=512)
    assert work(big) >= SMALL_WORK and auto_threads(big) == 7
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert auto_threads(big) is None  # the user's own choice stands


def test_idle_cores_counts_the_idle_ticks(monkeypatch):
    """Two samples of /proc/stat: the idle fractions of our CPUs over the window, summed and rounded."""
    monkeypatch.setattr(threads, "our_cpus", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cpu_quota", lambda: None)
    samples = iter([{0: (0, 0), 1: (0, 0), 2: (0, 0), 3: (0, 0), 4: (0, 0)},
                    {0: (10, 10), 1: (9, 10), 2: (0, 10), 3: (2, 10), 4: (10, 10)}])  # CPU 4 is not ours
    monkeypatch.setattr(threads, "cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads, "own_cpu_seconds", lambda: 0.0)
    assert threads.idle_cores(window=0) == 2  # 1 + 0.9 + 0 + 0.2 = 2.1
    monkeypatch.setattr(threads, "cpu_quota", lambda: 1)  # a container's --cpus=1 on an idle host
    samples = iter([{0: (0, 0), 1: (0, 0)}, {0: (10, 10), 1: (10, 10)}])
    monkeypatch.setattr(threads, "cpu_times", lambda: next(samples))
    assert threads.idle_cores(window=0) == 1
    monkeypatch.setattr(threads, "cpu_quota", lambda: None)
    busy = iter([{0: (0, 0), 1: (0, 0)}, {0: (0, 10), 1: (1, 10)}])
    monkeypatch.setattr(threads, "cpu_times", lambda: next(busy))
    assert threads.idle_cores(window=0) == 1  # never below one


def test_cpu_quota_reads_cgroup_v2(tmp_path):
    (tmp_path / "a").write_text("250000 100000\n")
    (tmp_path / "b").write_text("max 100000\n")
    assert threads.cpu_quota(str(tmp_path / "a")) == 3 and threads.cpu_quota(str(tmp_path / "b")) is None


def test_idle_cores_falls_back_on_the_load_average(monkeypatch):
    monkeypatch.setattr(threads, "our_cpus", lambda: set(range(8)))
    monkeypatch.setattr(threads, "cpu_quota", lambda: None)
    monkeypatch.setattr(threads, "cpu_times", lambda: None)  # not Linux
    monkeypatch.setattr(os, "getloadavg", lambda: (2.6, 0, 0))
    assert threads.idle_cores() == 5
    monkeypatch.setattr(os, "getloadavg", lambda: (30.0, 0, 0))
    assert threads.idle_cores() == 1


def test_idle_cores_sees_a_busy_neighbour():
    """A real CPU-bound process beside us takes one of our cores' idle time (on a machine with >= 2 of ours)."""
    cpus = sorted(threads.our_cpus())
    if len(cpus) < 2 or threads.cpu_times() is None:
        pytest.skip("needs Linux and two CPUs")
    idle_before = threads.idle_cores(window=0.3)
    if idle_before < 2:
        pytest.skip("the machine is busy already: one more process cannot take a core we would have counted")
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(neighbour.pid, {cpus[0]})
        time.sleep(0.2)
        assert threads.idle_cores(window=0.3) <= idle_before - 1
    finally:
        neighbour.kill()
        neighbour.wait()


def test_a_run_uses_the_count_and_restores_torch(monkeypatch):
    seen = []
    monkeypatch.setattr(threads, "auto_threads", lambda cfg: None)
    before = torch.get_num_threads()
    real = torch.set_num_threads

    def spy(n):
        seen.append(n)
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", spy)
    ufm.run(SimConfig(K=3, n=4, d=5, steps=5, certificate=False), progress=False, threads=2)
    assert seen[0] == 2 and torch.get_num_threads() == before
    with thread_count(None) as n:
        assert n == before
