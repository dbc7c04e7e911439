"""CUDA paths (skipped without a GPU): the same seed gives the same run on CPU and GPU."""

import pytest
import torch

import ufm
from analysis.metrics import nc_metrics
from ufm.config import SimConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_run_matches_cpu_run(tmp_path):
    kw = {"K": 4, "n": 5, "d": 6, "wd_W": 5e-3, "wd_H": 5e-3, "dtype": "float64", "optimizer": "lbfgs"}
    cpu = ufm.run(SimConfig(device="cpu", **kw), tmp_path / "cpu", progress=False).summary
    gpu = ufm.run(SimConfig(device="cuda", **kw), tmp_path / "gpu", progress=False).summary
    assert gpu["device"].startswith("cuda")
    for key in ("loss", "W_norm_sq", "H_norm_sq"):
        assert gpu["final"][key] == pytest.approx(cpu["final"][key], rel=1e-10)


def test_metrics_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 5
    H = torch.randn(5, 16, generator=g, dtype=torch.float64)[y] + torch.randn(300, 16, generator=g, dtype=torch.float64)
    W = torch.randn(5, 16, generator=g, dtype=torch.float64)
    a, b = nc_metrics(H, y, W), nc_metrics(H.cuda(), y.cuda(), W.cuda())
    for key in ("nc1", "nc2", "nc3", "nc4"):
        assert b[key] == pytest.approx(a[key], rel=1e-10)
