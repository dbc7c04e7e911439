"""The thread rule (ufm.fit.threads): one thread for small problems, the idle cores for large ones, an explicit
OMP_NUM_THREADS or threads= respected, torch's setting restored after a run."""

import os

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


def test_idle_cores_follows_the_load(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.6, 0, 0))
    assert threads.idle_cores() == 5
    monkeypatch.setattr(os, "getloadavg", lambda: (30.0, 0, 0))
    assert threads.idle_cores() == 1


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
