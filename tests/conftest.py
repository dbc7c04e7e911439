"""Tests marked `slow` (minutes on 2 CPU cores) run only with --runslow; `gpu` tests skip themselves
without CUDA. The tests compute with one thread (and so do the processes they start): their products are
small, and on a machine with any other load a second thread makes them several times slower (measured: a
K = 4 run under a registered loss took 2–9 s with 2 threads beside another job, 0.26 s with one)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; inherited by subprocesses
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run the tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
