"""How many CPU threads a run computes with. Small matrix products gain nothing from a second thread and lose a
lot when another process competes for the cores (measured on 2 cores: the default 5000-step CE run took 71 s with
2 threads beside another job, 12 s with one), so the count follows the problem's size and the machine's load:
one thread below SMALL_WORK multiply-adds per product, else the cores the 1-minute load average leaves idle."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ufm.config import SimConfig

# N·d·K multiply-adds per product: a second thread gained nothing at 5e6 (the default run: 0.61 vs 0.58 ms per
# step) and 26 % at 2e7, idle, on this project's 2-core machine (benchmarks/threads.py)
SMALL_WORK = 2e7


def work(cfg: SimConfig) -> float:
    """Multiply-adds of the run's largest product: N·d·K, or N·width² through a hidden layer."""
    return cfg.N * max(cfg.d * cfg.K, cfg.width * cfg.width if cfg.depth > 1 else 0, cfg.feature_dim * cfg.K)


def idle_cores() -> int:
    """The cores the 1-minute load average leaves idle (at least 1)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = 0.0
    return max(1, min(cores, cores - round(load)))


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
