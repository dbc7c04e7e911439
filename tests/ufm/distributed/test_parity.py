"""A UFM run across 2, 3 and 4 gloo processes (one thread each, float64) follows the single-process trajectory:
GD under MSE and CE (with and without a bias), SGD with momentum (full batch and mini-batches) and Adam, with
N = 13 rows in uneven shards and classes split across ranks; 100 steps, losses, NC1 and parameters to 1e-10.
Fused GD makes exactly one all-reduce per step, of Kd + K + 1 values."""

import socket

import pytest
import torch
import torch.multiprocessing as mp

import ufm
from tests.ufm.distributed.workers import CONFIGS, config, parity


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single():
    return {name: ufm.run(config(name), progress=False) for name in CONFIGS}


@pytest.mark.parametrize("world", [2, 3, 4])
def test_trajectory_equals_the_single_process_run(world, single, tmp_path):
    path = str(tmp_path / "results.pt")
    mp.spawn(parity, args=(world, free_port(), path), nprocs=world, join=True)
    results = torch.load(path, weights_only=True)
    for name, ref in single.items():
        got = results[name]
        assert got["step"].tolist() == [row["step"] for row in ref.history], name
        assert got["step"][-1] == 100
        loss = torch.tensor([row["loss"] for row in ref.history])
        torch.testing.assert_close(got["loss"], loss, rtol=0, atol=1e-10, msg=name)
        nc1 = torch.tensor([row["nc1"] for row in ref.history])
        torch.testing.assert_close(got["nc1"], nc1, rtol=1e-9, atol=1e-10, msg=name)
        for key, value in ref.params.items():
            assert got[key].shape == value.shape, (name, key)
            torch.testing.assert_close(got[key], value, rtol=0, atol=1e-10, msg=f"{name} {key}")
    K, d = 3, 4
    assert results["all_reduces"].tolist() == [K * d + K + 1] * 10  # one packed all-reduce per step
