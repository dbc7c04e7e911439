"""How many CPU threads a run computes with. Small matrix products gain nothing from a second thread and lose a
lot when another process competes for the cores (measured on 2 cores: the default 5000-step CE run took 71 s with
2 threads beside another job, 12 s with one), so the count follows the problem's size and the machine's load:
one thread below SMALL_WORK multiply-adds per product, else the cores that are idle now (sampled from /proc/stat
over IDLE_WINDOW seconds; the 1-minute load average where that cannot be read — it lags: a job that ended a
minute ago still counts, and cost large runs their second core back to back)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ufm.config import SimConfig

# N·d·K multiply-adds per product: a second thread gained nothing at 5e6 (the default run: 0.61 vs 0.58 ms per
# step) and 26 % at 2e7, idle, on this project's 2-core machine (benchmarks/threads.py)
SMALL_WORK = 2e7
IDLE_WINDOW = 0.1  # seconds: 10 scheduler ticks per core at 100 Hz


def work(cfg: SimConfig) -> float:
    """Multiply-adds of the run's largest product: N·d·K, or N·width² through a hidden layer."""
    return cfg.N * max(cfg.d * cfg.K, cfg.width * cfg.width if cfg.depth > 1 else 0, cfg.feature_dim * cfg.K)


def cpu_times(path: str = "/proc/stat") -> dict[int, tuple[int, int]] | None:
    """(idle, total) scheduler ticks of each CPU so far, from /proc/stat (idle + iowait of user … steal); None where
    it cannot be read (not Linux).
    >>> cpu_times("/nonexistent") is None
    True
    """
    try:
        with open(path) as f:
            rows = [line.split() for line in f if line.startswith("cpu") and line[3].isdigit()]
        return {int(r[0][3:]): (int(r[4]) + int(r[5]), sum(int(x) for x in r[1:9])) for r in rows}
    except (OSError, ValueError, IndexError):
        return None


def our_cpus() -> set[int]:
    """The CPUs this process may run on."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used so far."""
    t = os.times()
    return t.user + t.system


def cpu_quota(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """The cores a cgroup v2 CPU quota allows ("quota period" in cpu.max, rounded up); None without a quota (a
    container limited with --cpus sees all the host's CPUs in its affinity and in /proc/stat).
    >>> cpu_quota("/nonexistent") is None
    True
    """
    try:
        with open(path) as f:
            fields = f.read().split()
        return None if fields[0] == "max" else max(1, math.ceil(int(fields[0]) / int(fields[1])))
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        return None


def idle_cores(window: float = IDLE_WINDOW) -> int:
    """The cores of ours that no other process used over the last `window` seconds (at least 1, at most a cgroup
    quota): the sum of their idle fractions and of our own use, rounded; from the 1-minute load average where
    /proc/stat cannot be read.
    >>> 1 <= idle_cores() <= len(our_cpus())
    True
    """
    cpus = our_cpus()
    limit = min(len(cpus), cpu_quota() or len(cpus))
    before, own, start = cpu_times(), own_cpu_seconds(), time.perf_counter()
    if before is not None:
        time.sleep(window)
        after = cpu_times() or {}
        # our own idle OpenMP workers spin for a while after torch's last parallel op: their time is ours to use
        ours = (own_cpu_seconds() - own) / max(time.perf_counter() - start, 1e-9)
        seen = [c for c in cpus if c in before and c in after and after[c][1] > before[c][1]]
        if seen:
            idle = sum((after[c][0] - before[c][0]) / (after[c][1] - before[c][1]) for c in seen)
            return max(1, min(limit, round(idle * len(cpus) / len(seen) + ours)))
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = 0.0
    return max(1, min(limit, len(cpus) - round(load)))


def auto_threads(cfg: SimConfig) -> int | None:
    """1 for small problems (work < SMALL_WORK), else the idle cores; None (leave torch's setting alone) where the
    user chose a count in the environment (OMP_NUM_THREADS).
    >>> work(SimConfig(K=10, n=100, d=512)) < SMALL_WORK  # the default run: one thread
    True
    """
    if "OMP_NUM_THREADS" in os.environ:
        return None
    return 1 if work(cfg) < SMALL_WORK else idle_cores()


@contextmanager
def thread_count(n: int | None) -> Iterator[int]:
    """torch's intra-op threads set to `n` inside the block (None: unchanged), restored after it."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
