"""The loss registry against written-out formulas."""

import pytest
import torch

from ufm.losses import LOSSES, LossOptions


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(20, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (20,), generator=g)


def test_mse_is_half_squared_distance_to_scaled_one_hot(batch):
    Z, y = batch
    s = 2.5
    expected = 0.5 * ((Z - s * torch.eye(5, dtype=torch.float64)[y]) ** 2).sum(1).mean()
    assert float(LOSSES["mse"](Z, y, LossOptions(target_scale=s))) == pytest.approx(float(expected), rel=1e-14)
    # K/2 times PyTorch's element-mean MSELoss
    torch_mse = torch.nn.functional.mse_loss(Z, torch.eye(5, dtype=torch.float64)[y])
    assert float(LOSSES["mse"](Z, y, LossOptions())) == pytest.approx(5 / 2 * float(torch_mse), rel=1e-14)


def test_ce_is_negative_log_softmax(batch):
    Z, y = batch
    expected = -(Z[torch.arange(20), y] - torch.logsumexp(Z, 1)).mean()
    assert float(LOSSES["ce"](Z, y, LossOptions())) == pytest.approx(float(expected), rel=1e-14)


def test_label_smoothing_targets(batch):
    Z, y = batch
    a = 0.3
    q = (1 - a) * torch.eye(5, dtype=torch.float64)[y] + a / 5
    expected = -(q * torch.log_softmax(Z, 1)).sum(1).mean()
    assert float(LOSSES["ls"](Z, y, LossOptions(smoothing=a))) == pytest.approx(float(expected), rel=1e-14)
    # α = 0 is plain CE
    assert float(LOSSES["ls"](Z, y, LossOptions(smoothing=0.0))) == pytest.approx(float(LOSSES["ce"](Z, y, None)))
