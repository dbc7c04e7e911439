"""NC at every layer (analysis.layers, NCTracker(layers=)): each layer's numbers against a naive computation from
forward hooks written here (float64, 1e-10), for an MLP and a small CNN; the separation law against numpy's
polyfit (He & Su 2023: log D_l = a − ρ·l)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from analysis.blocked import budget
from analysis.layers import LayerHooks, measure_layers, pool_features, select_layers, separation_law
from analysis.metrics import nc_metrics
from analysis.tracking import NCTracker

K = 3


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, K)).double()


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(2, 5, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(5, 7, 3, padding=1, stride=2)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(7, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(h.mean((2, 3)))


def data(shape: tuple[int, ...], n: int = 60, batches: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(batches):
        y = torch.randint(0, K, (n,), generator=g)
        y[:K] = torch.arange(K)  # every class in every batch
        x = torch.randn(n, *shape, generator=g, dtype=torch.float64) + y.double().view(-1, *[1] * len(shape))
        out.append((x, y))
    return out


def naive_features(model: nn.Module, batches, name: str, pool: str = "avg") -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output over all batches, captured by a hook written here, pooled by hand."""
    module = dict(model.named_modules())[name]
    seen = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    handle.remove()
    H = torch.cat(seen)
    if H.dim() == 4:
        H = H.mean((2, 3)) if pool == "avg" else H.reshape(H.shape[0], -1)
    return H, torch.cat([y for _, y in batches])


def naive_layer(H: torch.Tensor, y: torch.Tensor, K: int = K) -> dict:
    """NC1 = tr(Σ_W Σ_B⁺)/K (Papyan et al. 2020), D = tr(Σ_W Σ_B⁺), tr Σ_W / tr Σ_B, the singular values of the
    centered means, and nearest-class-center accuracy, by their definitions."""
    N = H.shape[0]
    mu_G = H.mean(0)
    M = torch.stack([H[y == k].mean(0) for k in range(K)])
    Sw = sum((H[y == k] - M[k]).T @ (H[y == k] - M[k]) for k in range(K)) / N
    Mc = M - mu_G
    Sb = Mc.T @ Mc / K
    D = float(torch.trace(Sw @ torch.linalg.pinv(Sb, rtol=1e-10)))
    ncc = float((torch.cdist(H, M).argmin(1) == y).double().mean())
    sv = torch.linalg.svdvals(M - M.mean(0)).tolist()
    cos = [abs(float(M[i] @ M[j] / (M[i].norm() * M[j].norm()))) for i in range(K) for j in range(K) if i != j]
    return {"orthogonality": max(cos), "nc1": D / K, "separation": D,
            "nc1_trace": float(torch.trace(Sw) / torch.trace(Sb)), "singular_values": sv, "ncc_accuracy": ncc,
            "rank_means": float(np.linalg.matrix_rank(Mc.numpy()))}


def assert_layer(got: dict, H: torch.Tensor, y: torch.Tensor, two_pass: bool) -> None:
    ref = naive_layer(H, y)
    for key in ("nc1", "separation", "nc1_trace", "orthogonality"):
        assert got[key] == pytest.approx(ref[key], rel=1e-10, abs=1e-12), key
    np.testing.assert_allclose(got["singular_values"], ref["singular_values"], rtol=1e-10, atol=1e-12)
    assert got["rank_means"] == ref["rank_means"]
    assert got["nc2"] == pytest.approx(nc_metrics(H, y, K=K)["nc2"], rel=1e-10, abs=1e-12)
    assert got["samples"] == len(y) and got["dim"] == H.shape[1]
    if two_pass:
        assert got["ncc_accuracy"] == pytest.approx(ref["ncc_accuracy"], abs=1e-15)
    else:
        assert math.isnan(got["ncc_accuracy"])


@pytest.mark.parametrize("case", ["mlp", "cnn"])
def test_every_layer_equals_the_naive_computation(case):
    model, shape = (mlp(), (6,)) if case == "mlp" else (SmallCNN().double(), (2, 6, 6))
    batches = data(shape)
    names = ["1", "3"] if case == "mlp" else ["act1", "act2"]
    assert list(select_layers(model, "all")) == names  # the activations, in forward order
    tracker = NCTracker(model, "4" if case == "mlp" else "fc", layers="all")
    for x, y in batches:
        tracker.update(x, y)
        model(x)  # the user's own forward (a training step) between updates is not recorded
    one_pass = tracker.compute_layers()
    two_pass = measure_layers(model, batches, K, "all")
    assert list(one_pass) == list(two_pass) == names
    for name in names:
        H, y = naive_features(model, batches, name)
        assert_layer(one_pass[name], H, y, two_pass=False)
        assert_layer(two_pass[name], H, y, two_pass=True)
    # the classifier's own metrics are unchanged by the extra hooks
    H, y = naive_features(model, batches, names[-1])
    if case == "mlp":
        Hin = torch.cat([model[3](model[2](model[1](model[0](x)))) for x, _ in batches]).detach()
        ref = nc_metrics(Hin, y, model[4].weight, model[4].bias, K=K)
    else:
        ref = nc_metrics(H, y, model.fc.weight, model.fc.bias, K=K)
    assert tracker.compute()["nc1"] == pytest.approx(ref["nc1"], rel=1e-10)
    tracker.remove()


def test_flatten_and_callable_pools():
    model, batches = SmallCNN().double(), data((2, 6, 6))
    H, y = naive_features(model, batches, "act2", pool="flatten")
    got = measure_layers(model, batches, K, ["act2"], pool="flatten")["act2"]
    assert_layer(got, H, y, two_pass=True)
    maxpool = measure_layers(model, batches, K, ["act2"], pool=lambda t: t.amax((2, 3)))["act2"]
    Hmax = torch.cat([model.act2(model.conv2(model.act1(model.conv1(x)))).amax((2, 3)) for x, _ in batches]).detach()
    assert maxpool["nc1"] == pytest.approx(naive_layer(Hmax, y)["nc1"], rel=1e-10)
    assert pool_features(torch.ones(4, 3, 5), "avg").shape == (4, 3)  # (N, C, L): a 1-D convolution's output


def test_separation_law_equals_numpys_polyfit():
    D = [5.3, 2.9, 1.2, 0.71, 0.26, 0.15]
    law = separation_law(D)
    slope, intercept = np.polyfit(np.arange(1, 7), np.log(D), 1)
    assert law.rho == pytest.approx(-slope, rel=1e-12) and law.a == pytest.approx(intercept, rel=1e-12)
    fit = intercept + slope * np.arange(1, 7)
    r2 = 1 - ((np.log(D) - fit) ** 2).sum() / ((np.log(D) - np.log(D).mean()) ** 2).sum()
    assert law.r2 == pytest.approx(r2, rel=1e-12) and 0.95 < law.r2 < 1
    depths = [2, 4, 8]
    slope, intercept = np.polyfit(depths, np.log([4.0, 1.0, 0.1]), 1)
    assert separation_law([4.0, 1.0, 0.1], depths).rho == pytest.approx(-slope, rel=1e-12)
    exact = separation_law([3 * 0.5 ** l for l in range(1, 5)])
    assert exact.rho == pytest.approx(math.log(2), rel=1e-12) and exact.r2 == pytest.approx(1.0, abs=1e-12)
    assert exact.ratio == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("D, depths, message", [([1.0], None, "at least 2"), ([1.0, 0.0], None, "> 0"),
                                                ([1.0, math.nan], None, "finite"), ([1.0, 2.0], [1, 1], "equal"),
                                                ([1.0, 2.0], [1, 2, 3], "one value per layer")])
def test_separation_law_refuses_bad_input(D, depths, message):
    with pytest.raises(ValueError, match=message):
        separation_law(D, depths)


def test_layer_selection_and_hooks_refuse_clearly():
    model = mlp()
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        select_layers(model, ["nope"])
    with pytest.raises(TypeError, match="layers must"):
        select_layers(model, 3)
    with pytest.raises(ValueError, match="pool must be one of"):
        LayerHooks(model, "all", pool="max")
    shared = nn.ReLU()
    twice = nn.Sequential(nn.Linear(4, 4), shared, nn.Linear(4, 4), shared, nn.Linear(4, 3))
    with LayerHooks(twice, [shared]) as hooks, pytest.raises(RuntimeError, match="ran twice"):
        twice(torch.randn(2, 4))
    assert not hooks._handles
    functional = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))  # no activation modules: the Linear layers
    assert list(select_layers(functional, "all")) == ["0", "1"]


def test_a_flattened_layer_beyond_the_budget_is_refused_naming_it():
    model, batches = SmallCNN().double(), data((2, 6, 6))
    tracker = NCTracker(model, "fc", layers=["act1"], pool="flatten")  # 5·6·6 = 180 features: 259 KB of statistics
    with budget(64 * 1024), pytest.raises(ValueError, match="layer 'act1' has 180 features"):
        tracker.update(*batches[0])
    with pytest.raises(ValueError, match="no layers are tracked"):
        NCTracker(model, "fc").compute_layers()
