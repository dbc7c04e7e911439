"""NC of a network from streamed batches equals the metrics of the whole feature matrix, and the sum over
data-parallel processes (gloo, 2 CPU processes) gives exactly the metrics of the union of their shards."""

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from analysis.hierarchical_metrics import hierarchical_metrics, prediction_metrics, prediction_sums
from analysis.hierarchy import load
from analysis.metrics import METRIC_KEYS, nc_metrics, nc_metrics_streaming
from ufm.backbone.config import TrainConfig
from ufm.backbone.measure import measure_split
from ufm.backbone.networks import build_network
from ufm.losses import LOSSES, LossOptions


def _mixture(N=300, K=6, d=12, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(N) % K
    means = torch.randn(K, d, generator=g, dtype=dtype) * 3
    H = means[y] + torch.randn(N, d, generator=g, dtype=dtype)
    W = torch.randn(K, d, generator=g, dtype=dtype)
    b = torch.randn(K, generator=g, dtype=dtype)
    return H, y, W, b


def _assert_same(a: dict, b: dict, rtol: float) -> None:
    for k in a:
        if isinstance(a[k], float) and math.isnan(a[k]):
            assert math.isnan(b[k]), k
        else:
            assert b[k] == pytest.approx(a[k], rel=rtol, abs=1e-12), k


def test_measure_split_matches_nc_metrics_of_all_features():
    """measure_split (batches of 64) against nc_metrics and hierarchical_metrics of the full feature matrix."""
    torch.manual_seed(0)
    cfg = TrainConfig(dataset="synthetic", mlp_width=24, mlp_depth=2)
    net = build_network(cfg, (1, 1, 10), K=6).eval()
    x, y = torch.randn(200, 1, 1, 10), torch.arange(200) % 6
    tree = load("balanced:2,3")
    S = torch.eye(6) * 0.5 + 0.5
    lca = torch.tensor(tree.lca_heights)
    row = measure_split(net, x, y, 6, LOSSES["ce"], LossOptions(), batch_size=64, device=torch.device("cpu"),
                        lca=lca, frame_gram=S)
    with torch.no_grad():
        H, Z = net(x)
    ref = nc_metrics(H, y, net.W.detach(), net.b.detach(), K=6)
    _assert_same({k: ref[k] for k in METRIC_KEYS}, row, 1e-5)
    _assert_same(hierarchical_metrics(H, y, lca, net.W.detach(), net.b.detach(), S, K=6), row, 1e-5)
    assert row["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(Z, y)), rel=1e-6)
    assert row["H_norm_sq"] == pytest.approx(float(H.double().square().sum()), rel=1e-6)


def test_hug_is_measured_on_directions():
    """HUG decides by the nearest proxy in angle: NC metrics of ĥ and Ŵ, accuracy from ĥŴᵀ (not Wh)."""
    torch.manual_seed(1)
    cfg = TrainConfig(dataset="synthetic", mlp_width=8, mlp_depth=1, loss="hug", bias=False)
    net = build_network(cfg, (1, 1, 6), K=6).eval()
    with torch.no_grad():
        net.W.mul_(torch.linspace(0.2, 5, 6)[:, None])  # unequal proxy norms: Wh and ĥŴᵀ disagree
    x, y = torch.randn(300, 1, 1, 6), torch.arange(300) % 6
    lca = torch.tensor(load("balanced:2,3").lca_heights)
    row = measure_split(net, x, y, 6, LOSSES["hug"], LossOptions(), batch_size=64, device=torch.device("cpu"),
                        normalized=True, lca=lca)
    with torch.no_grad():
        H, Z = net(x)
    Hn, Wn = H / H.norm(dim=1, keepdim=True), net.W / net.W.norm(dim=1, keepdim=True)
    cosine_accuracy = float(((Hn @ Wn.T).argmax(1) == y).double().mean())
    assert float((Z.argmax(1) == y).double().mean()) != cosine_accuracy
    assert row["accuracy"] == pytest.approx(cosine_accuracy)
    assert row["nc1"] == pytest.approx(nc_metrics(Hn, y, Wn, K=6)["nc1"], rel=1e-5)


def test_prediction_sums_are_additive_over_batches():
    H, y, W, b = _mixture()
    lca = torch.tensor(load("balanced:2,3").lca_heights)
    Z = H @ W.T + b
    whole = prediction_metrics(prediction_sums(Z, y, lca))
    parts = prediction_sums(Z[:100], y[:100], lca) + prediction_sums(Z[100:], y[100:], lca)
    assert prediction_metrics(parts) == pytest.approx(whole, rel=1e-14)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        H, y, W, b = _mixture()
        shard = torch.arange(rank, len(y), world)

        def reduce(t):
            t = t.clone()
            dist.all_reduce(t)
            return t

        # each process streams its own shard in batches of 37 rows
        batches = [(H[shard][i:i + 37], y[shard][i:i + 37]) for i in range(0, len(shard), 37)]
        results[rank] = nc_metrics_streaming(batches, 6, W, b, reduce=reduce)
    finally:
        dist.destroy_process_group()


def test_nc_statistics_reduced_over_two_gloo_processes_equal_the_single_process_metrics():
    """DDP reduction: every process gets the metrics of the whole dataset (float64, to 1e-12)."""
    H, y, W, b = _mixture()
    reference = nc_metrics(H, y, W, b, K=6)
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
        got = dict(results)
    for rank in (0, 1):
        _assert_same(reference, got[rank], 1e-12)
