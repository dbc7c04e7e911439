"""Factories named on the command line by tests/analysis/test_measure.py (`--model
tests.analysis.measure_factories:make_model --data …:loader --layer fc`): a tiny float64 network and its data."""

from collections import OrderedDict

import torch
from torch import nn

N, D_IN, D, K = 45, 4, 6, 3


def make_model() -> nn.Module:
    """body → tanh → fc: the penultimate features are the input of fc (dimension D)."""
    return nn.Sequential(OrderedDict(body=nn.Linear(D_IN, D), act=nn.Tanh(), fc=nn.Linear(D, K))).double()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    y = torch.arange(N) % K
    x = torch.randn(N, D_IN, generator=g, dtype=torch.float64) + 2.0 * torch.eye(K, D_IN, dtype=torch.float64)[y]
    return x, y


def loader() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches of 16, 16, 13."""
    x, y = inputs()
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, N, 16)]


def ood_inputs() -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return 4.0 + torch.randn(20, D_IN, generator=g, dtype=torch.float64)


def ood_loader() -> list[torch.Tensor]:
    x = ood_inputs()
    return [x[:10], x[10:]]


def not_a_module() -> int:
    return 3


def broken_loader():
    raise RuntimeError("the disk is gone")
