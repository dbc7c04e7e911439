"""The loss registry against written-out formulas."""

import numpy as np
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


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_focal_is_lin_et_al(batch, gamma):
    """Focal loss (Lin et al. 2017): −(1 − p_y)^γ log p_y, written out in numpy; γ = 0 is CE."""
    Z, y = batch
    p = torch.softmax(Z, 1)[torch.arange(20), y].numpy()
    expected = float((-((1 - p) ** gamma) * np.log(p)).mean())
    assert float(LOSSES["focal"](Z, y, LossOptions(focal_gamma=gamma))) == pytest.approx(expected, rel=1e-13)


def test_focal_stays_finite_where_the_true_class_is_certain():
    """p_y = 1 to machine precision (a logit gap of 800): the loss is 0 and its gradient finite for γ < 1."""
    Z = torch.tensor([[800.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    loss = LOSSES["focal"](Z, torch.tensor([0]), LossOptions(focal_gamma=0.5))
    loss.backward()
    assert float(loss) == 0.0 and torch.isfinite(Z.grad).all()


def test_a_backbone_trains_under_the_focal_loss(tmp_path):
    """The registry serves the backbone mode too: --loss focal --focal-gamma reaches TrainConfig and the loop."""
    from ufm.cli.train import main

    out = tmp_path / "run"
    assert main(["--dataset", "synthetic", "--classes", "3", "--per-class", "8", "--test-per-class", "4",
                 "--mlp-width", "8", "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--loss", "focal",
                 "--focal-gamma", "3", "--quiet", "--out", str(out)]) == 0
    import json

    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["loss"] == "focal" and s["config"]["focal_gamma"] == 3.0 and s["status"] == "ok"
