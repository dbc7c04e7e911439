"""analysis.torchmetrics_adapter.NCMetric: its compute equals NCAccumulator(keep_features=False).compute on the same
data (float64, 1e-10 relative), its sum states combine shards through torchmetrics' own reductions (merge_state,
and two gloo processes), and the precision of its fixed shift is what the module says."""

import json
import math
import time

import numpy as np
import pytest
import torch

pytest.importorskip("torchmetrics")

from analysis.metrics import nc_metrics  # noqa: E402
from analysis.torchmetrics_adapter import NCMetric  # noqa: E402
from analysis.tracking import NCAccumulator  # noqa: E402

K, D = 4, 6
TOL = 1e-10


def data(seed=0, counts=(30, 17, 22, 11)):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(K), counts))
    H = (3.0 * rng.normal(size=(K, D)))[y] + rng.normal(size=(len(y), D))
    W, b = rng.normal(size=(K, D)), 0.1 * rng.normal(size=K)
    return torch.from_numpy(H), torch.from_numpy(y), torch.from_numpy(W), torch.from_numpy(b)


def batches(H, y, size=13):
    return [(H[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


def close(ours: dict, ref: dict, tol: float = TOL) -> bool:
    """The same keys; NaN where ref is NaN; else |ours − ref| <= tol·max(1, |ref|)."""
    assert ours.keys() == ref.keys()
    for key, value in ref.items():
        if math.isnan(value):
            assert math.isnan(ours[key]), key
        elif abs(ours[key] - value) > tol * max(1.0, abs(value)):
            raise AssertionError(f"{key}: {ours[key]} != {value}")
    return True


@pytest.mark.parametrize("global_mean", ["samples", "classes"])
def test_compute_equals_the_lean_accumulator(global_mean):
    H, y, W, b = data()
    logits = H @ W.T + b
    metric = NCMetric(K, D, W, b, global_mean=global_mean)
    acc = NCAccumulator(K, keep_features=False, global_mean=global_mean)
    for Hb, yb in batches(H, y):
        p = (Hb @ W.T + b).argmax(1)
        metric.update(Hb, yb, p)
        acc.update(Hb, yb, p)
    ref = acc.compute(W, b)
    assert close(metric.compute(), ref)                      # W and b from the constructor
    assert close(metric.compute(W, b), ref)                  # or given to compute
    assert close(metric.compute(W=torch.zeros(K, D)), acc.compute(torch.zeros(K, D), b))  # no cached first answer
    assert ref["accuracy"] == float((logits.argmax(1) == y).double().mean())
    assert math.isnan(ref["nc4"]) and not math.isnan(ref["nc1"])
    # and both are nc_metrics of the stacked features, but for what one pass cannot give
    full = nc_metrics(H, y, W, b, K=K, global_mean=global_mean)
    assert close({k: v for k, v in metric.compute().items() if k not in ("nc4", "ncc_accuracy")},
                 {k: v for k, v in full.items() if k not in ("nc4", "ncc_accuracy")})


def test_reset_forward_and_merge_state_use_the_sum_states():
    """forward (the metric called on a batch) returns that batch's metrics and accumulates; merge_state adds another
    metric's states with the registered sum reductions: the union of the two shards; reset forgets everything."""
    H, y, W, b = data()
    a, c = NCMetric(K, D, missing="exclude"), NCMetric(K, D, missing="exclude")
    cut = 45
    for Hb, yb in batches(H[:cut], y[:cut], 15):
        assert close(a(Hb, yb), nc_batch(Hb, yb))
    for Hb, yb in batches(H[cut:], y[cut:]):
        c.update(Hb, yb)
    a.merge_state(c)
    acc = NCAccumulator(K, keep_features=False, missing="exclude")
    acc.update(H, y)
    assert close(a.compute(W, b), acc.compute(W, b))
    a.reset()
    assert int(a.counts.sum()) == 0 and float(a.scatter.abs().sum()) == 0.0
    with pytest.warns(UserWarning, match="called before the ``update``"), \
            pytest.raises(ValueError, match="^no data: call update"):
        a.compute()


def nc_batch(H, y):
    acc = NCAccumulator(K, keep_features=False, missing="exclude")
    acc.update(H, y)
    return acc.compute()


def test_the_shift_buys_the_digits_the_module_docstring_promises():
    """Collapsed classes (‖μ_k‖ = 1, spread σ): with the default zero shift NC1 keeps what the docstring says
    (σ = 1e-3: 5e-10 relative, σ = 1e-6: 2e-4), with the class means as the shift it is as exact as NCAccumulator."""
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(K, D, generator=g, dtype=torch.float64)
    mu /= mu.norm(dim=1, keepdim=True)
    y = torch.arange(K * 50) % K
    for sigma, zero_bound in ((1e-3, 5e-9), (1e-6, 2e-3)):
        H = mu[y] + sigma * torch.randn(len(y), D, generator=g, dtype=torch.float64) / D ** 0.5
        exact = nc_metrics(H, y, K=K)["nc1"]
        zero, shifted = NCMetric(K, D), NCMetric(K, D, shift=mu)
        zero.update(H, y)
        shifted.update(H, y)
        assert abs(zero.compute()["nc1"] - exact) <= zero_bound * exact
        assert abs(shifted.compute()["nc1"] - exact) <= 1e-13 * exact


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="^K must be an int"):
        NCMetric(4.0, D)
    with pytest.raises(ValueError, match="^d must be at least 1"):
        NCMetric(K, 0)
    with pytest.raises(ValueError, match=r"^W must have shape \(4, 6\), got \(4, 5\)"):
        NCMetric(K, D, W=torch.zeros(K, 5))
    with pytest.raises(ValueError, match=r"^shift must have shape \(4, 6\)"):
        NCMetric(K, D, shift=torch.zeros(D))
    with pytest.raises(ValueError, match="^global_mean must be one of"):
        NCMetric(K, D, global_mean="median")
    m = NCMetric(K, D)
    with pytest.raises(ValueError, match="^features have dimension 5, this metric d = 6$"):
        m.update(torch.zeros(3, 5), [0, 1, 2])
    with pytest.raises(ValueError, match=r"^labels must lie in 0\.\.3"):
        m.update(torch.zeros(2, D), [0, 4])
    with pytest.raises(ValueError, match="non-finite"):
        m.update(torch.full((2, D), float("nan")), [0, 1])


def _gloo_worker(rank, world, init, data_path, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        saved = torch.load(data_path, weights_only=True)
        H, y, W, b, cut = saved["H"], saved["y"], saved["W"], saved["b"], saved["cut"]
        shard = slice(0, cut) if rank == 0 else slice(cut, None)  # unequal shards
        metric = NCMetric(K, D, W, b)
        for Hb, yb in batches(H[shard], y[shard], 9 + rank):
            metric.update(Hb, yb)
        out = metric.compute()  # torchmetrics syncs the sum states over the process group
        local = int(metric.counts.sum())  # and restores this process's own afterwards
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump({"metrics": out, "local": local}, f)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_get_the_metrics_of_the_union(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    import torch.multiprocessing as mp

    H, y, W, b = data(seed=3)
    cut = 37
    torch.save({"H": H, "y": y, "W": W, "b": b, "cut": cut}, tmp_path / "data.pt")
    ctx = mp.spawn(_gloo_worker, args=(2, f"file://{tmp_path / 'init'}", str(tmp_path / "data.pt"), str(tmp_path)),
                   nprocs=2, join=False)
    deadline = time.monotonic() + 120  # a hang guard, not a speed requirement
    while not ctx.join(timeout=0.2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the gloo processes did not finish in 120 s")
    acc = NCAccumulator(K, keep_features=False)
    acc.update(H, y)
    ref = acc.compute(W, b)
    for rank, local in ((0, cut), (1, len(y) - cut)):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert close(result["metrics"], ref)
        assert result["local"] == local
