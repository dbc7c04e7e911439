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


def proc_stat(tmp_path, name: str, *cpus: tuple[int, int, int]) -> str:
    """A /proc/stat in the kernel's format: per CPU (busy, idle, iowait) ticks; busy is split between user and
    system, and the lines that are not per-CPU (the total, interrupts) are there to be skipped."""
    rows = [f"cpu{i} {b - b // 3} 0 {b // 3} {idle} {iowait} 0 0 0 0 0" for i, (b, idle, iowait) in enumerate(cpus)]
    total = [sum(c[k] for c in cpus) for k in range(3)]
    path = tmp_path / name
    path.write_text("\n".join([f"cpu  {total[0]} 0 0 {total[1]} {total[2]} 0 0 0 0 0", *rows,
                               "intr 7394843 0 0 0", "ctxt 7883735", "btime 1765050000", "processes 4242"]) + "\n")
    return str(path)


class FakeClock:
    """time.sleep and time.perf_counter for idle_cores: sleeping moves the clock, nothing else does."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.mark.parametrize("own, expected", [(0.0, 1), (0.1, 2)], ids=["a neighbour", "our own workers"])
def test_the_rule_gives_a_busy_neighbours_core_away(monkeypatch, tmp_path, own, expected):
    """Two samples of /proc/stat 0.1 s apart on two CPUs of ours: CPU 0 busy every tick, CPU 1 idle (half of it in
    iowait, which is idle too). A neighbour's process on CPU 0 takes that core: a large run gets one thread. The
    same ticks spent by our own process (its idle OpenMP workers spinning: 0.1 CPU-seconds in the 0.1 s) are
    ours to use: two threads. Deterministic: the samples, the clock and our CPU time are given."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "our_cpus", lambda: {0, 1})
    monkeypatch.setattr(threads, "cpu_quota", lambda: None)
    clock = FakeClock()
    monkeypatch.setattr(threads, "time", clock)
    samples = iter([proc_stat(tmp_path, "before", (500, 100, 20), (300, 300, 20)),
                    proc_stat(tmp_path, "after", (510, 100, 20), (300, 305, 25))])
    real_cpu_times = threads.cpu_times
    monkeypatch.setattr(threads, "cpu_times", lambda: real_cpu_times(next(samples)))
    monkeypatch.setattr(threads, "own_cpu_seconds", lambda: 3.0 + own * (clock.now >= threads.IDLE_WINDOW))
    big = SimConfig(K=100, n=100, d=512)
    assert work(big) >= SMALL_WORK
    assert auto_threads(big) == expected
    assert clock.now == threads.IDLE_WINDOW  # one window slept


def test_proc_stat_is_read_per_cpu_with_iowait_as_idle(tmp_path):
    path = proc_stat(tmp_path, "stat", (510, 100, 20), (300, 305, 25))
    assert threads.cpu_times(path) == {0: (120, 630), 1: (330, 630)}
    (tmp_path / "garbled").write_text("cpu0 12 x\n")
    assert threads.cpu_times(str(tmp_path / "garbled")) is None


def test_idle_cores_sees_a_real_busy_neighbour():
    """A real CPU-bound process pinned to one of our CPUs: /proc/stat shows that CPU busy over the window, and the
    rule never counts it idle, however busy the machine is otherwise (the exact decision, whatever the load, is
    the deterministic test above)."""
    cpus = sorted(threads.our_cpus())
    if len(cpus) < 2 or threads.cpu_times() is None:
        pytest.skip("needs Linux and two CPUs")
    neighbour = subprocess.Popen([sys.executable, "-c", "print('spinning', flush=True)\nwhile True: pass"],
                                 stdout=subprocess.PIPE, text=True)
    try:
        os.sched_setaffinity(neighbour.pid, {cpus[0]})
        assert neighbour.stdout.readline() == "spinning\n"  # it runs (on that CPU from now on)
        time.sleep(0.05)  # past a migration to that CPU
        before = threads.cpu_times()
        n = threads.idle_cores(window=0.3)
        after = threads.cpu_times()
        idle, total = (after[cpus[0]][k] - before[cpus[0]][k] for k in (0, 1))
        assert total > 0 and idle / total < 0.5, (idle, total)
        assert 1 <= n <= len(cpus) - 1
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
