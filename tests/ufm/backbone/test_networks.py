"""Backbones: feature dimensions, the HAFrame head and its fixed frame."""

import numpy as np
import pytest
import torch

from ufm.backbone.config import TrainConfig
from ufm.backbone.networks import build_network, feature_dim
from ufm.backbone.twin import twin_config
from ufm.problem import resolve


@pytest.mark.parametrize("arch, extra, shape", [
    ("mlp", {"mlp_width": 16, "mlp_depth": 2}, (1, 8, 8)),
    ("resnet18", {"resnet_width": 4}, (3, 16, 16)),
    ("wrn28", {"wrn_depth": 10, "wrn_widen": 1}, (3, 16, 16)),
    ("resnet18", {"resnet_width": 2}, (1, 1, 40)),  # a 1-D signal as a 1×1×40 image
])
def test_features_and_logits_have_the_configured_shapes(arch, extra, shape):
    cfg = TrainConfig(arch=arch, **extra)
    net = build_network(cfg, shape, K=5)
    h, z = net(torch.randn(6, *shape))
    assert h.shape == (6, feature_dim(cfg, 5)) == (6, net.feature_dim)
    assert z.shape == (6, 5)
    assert torch.allclose(z, h @ net.W.T + net.b, atol=1e-6)


def test_haframe_head_feeds_the_fixed_frame():
    """HAFrame: K-dimensional features from the transformation layer; W = the frame, a buffer (not trained),
    whose Gram is S (Liang & Davis 2023)."""
    cfg = TrainConfig.from_dict(dict(loss="haframe", hierarchy="balanced:2,5", bias=False, mlp_width=32))
    sim = twin_config(cfg, (20,) * 10)
    frame = resolve(sim).frame
    net = build_network(cfg, (1, 8, 8), 10, torch.as_tensor(frame.W))
    assert net.feature_dim == 10 and net.b is None
    assert all(p is not net.W for p in net.parameters())
    np.testing.assert_allclose((net.W @ net.W.T).double().numpy(), frame.S, atol=1e-6)
    h, z = net(torch.randn(4, 1, 8, 8))
    assert h.shape == (4, 10) and torch.allclose(z, h @ net.W.T)
