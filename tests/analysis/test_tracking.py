"""analysis.tracking: the accumulator, the forward hook and the DDP path give exactly nc_metrics of the stacked
features (float64, 1e-10)."""

import doctest
import json
import math
import time

import numpy as np
import pytest
import torch
from torch import nn

import analysis
import analysis.tracking
from analysis.metrics import METRIC_KEYS, nc_metrics
from analysis.tracking import FeatureHook, NCAccumulator, NCTracker

TOL = 1e-10


def gaussian_classes(K, d, counts, seed=0):
    """Shuffled float64 Gaussian classes with a classifier near the means and a small bias."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(K), counts))
    centers = 3.0 * rng.normal(size=(K, d))
    H = centers[y] + rng.normal(size=(len(y), d))
    W = centers + 0.5 * rng.normal(size=(K, d))
    b = 0.1 * rng.normal(size=K)
    return H, y, W, b


def uneven_batches(H, y, seed=1):
    """Consecutive batches of random sizes 1..40 (one of size 1 at least), alternating numpy and torch."""
    rng = np.random.default_rng(seed)
    cuts = [0, 1]
    while cuts[-1] < len(y):
        cuts.append(min(len(y), cuts[-1] + int(rng.integers(1, 41))))
    out = []
    for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        Hb, yb = H[lo:hi], y[lo:hi]
        out.append((Hb, yb) if i % 2 else (torch.from_numpy(Hb), torch.from_numpy(yb)))
    return out


def max_difference(ours, ref):
    """max |ours − ref| over the keys; the keys must be the same and NaN exactly where ref is NaN."""
    assert set(ours) == set(ref) == set(METRIC_KEYS)
    worst = 0.0
    for key, value in ref.items():
        if math.isnan(value):
            assert math.isnan(ours[key]), key
        else:
            assert not math.isnan(ours[key]), key
            worst = max(worst, abs(ours[key] - value))
    return worst


CASES = {
    "d>K imbalanced": (5, 20, [60, 35, 20, 9, 3]),
    "d<K imbalanced": (10, 4, [40, 5, 22, 31, 8, 17, 2, 26, 13, 30]),
    "K=2": (2, 3, [7, 45]),
    "d=K balanced": (4, 4, [25] * 4),
}


@pytest.mark.parametrize("global_mean", ["samples", "classes"])
@pytest.mark.parametrize("classifier", ["none", "W", "W and b"])
@pytest.mark.parametrize("case", list(CASES))
def test_accumulator_equals_nc_metrics_of_stacked_features(case, classifier, global_mean):
    """Batches of uneven sizes (numpy and torch mixed) give nc_metrics of all the features: every key to
    1e-10, NaN where nc_metrics is NaN, with no classifier, with W, with W and b, for both global means."""
    K, d, counts = CASES[case]
    H, y, W, b = gaussian_classes(K, d, counts)
    W = None if classifier == "none" else W
    b = b if classifier == "W and b" else None
    acc = NCAccumulator(K, global_mean=global_mean)
    for Hb, yb in uneven_batches(H, y):
        acc.update(Hb, yb)
    assert acc.num_samples == len(y)
    ref = nc_metrics(H, y, W, b, K=K, global_mean=global_mean)
    assert max_difference(acc.compute(W, b), ref) <= TOL
    # compute does not consume the data: a second call gives the same numbers
    assert max_difference(acc.compute(W, b), ref) <= TOL


def test_storage_on_cpu_in_float64_from_float32_input():
    """store_device="cpu", dtype=float64: float32 batches are stored as float64 copies on the CPU, and the
    metrics are those of the float64 features; nbytes is N·d·8 + N·8."""
    K, d, counts = CASES["d>K imbalanced"]
    H, y, W, b = gaussian_classes(K, d, counts)
    H32 = H.astype(np.float32)
    acc = NCAccumulator(K, store_device="cpu", dtype=torch.float64)
    for Hb, yb in uneven_batches(H32, y):
        acc.update(Hb, yb)
    assert acc.nbytes == len(y) * d * 8 + len(y) * 8
    ref = nc_metrics(H32.astype(np.float64), y, W, b, K=K)
    assert max_difference(acc.compute(W, b), ref) <= TOL


def test_update_copies_and_detaches():
    """The accumulator keeps a detached copy: no graph, and changing the caller's tensor afterwards changes
    nothing."""
    H, y, W, b = gaussian_classes(3, 5, [10, 12, 8])
    Ht = torch.tensor(H, requires_grad=True)
    acc = NCAccumulator(3)
    acc.update(Ht * 1.0, y)  # a non-leaf tensor with a graph behind it
    buffer = H.copy()
    acc.update(buffer, y)
    buffer[:] = 0.0
    stored = [Hb for Hb, _ in acc._batches]
    assert all(not Hb.requires_grad and Hb.grad_fn is None for Hb in stored)
    ref = nc_metrics(np.concatenate([H, H]), np.concatenate([y, y]), W, b, K=3)
    assert max_difference(acc.compute(W, b), ref) <= TOL


def test_merge_equals_one_accumulator_over_all_batches():
    """Two accumulators fed from two halves of the batches, merged, equal one accumulator over all of them
    (and nc_metrics); the merged-in accumulator is unchanged."""
    K, d, counts = CASES["d<K imbalanced"]
    H, y, W, b = gaussian_classes(K, d, counts)
    batches = uneven_batches(H, y)
    one, first, second = NCAccumulator(K), NCAccumulator(K), NCAccumulator(K)
    for i, (Hb, yb) in enumerate(batches):
        one.update(Hb, yb)
        (first if i % 3 else second).update(Hb, yb)
    n_second = second.num_samples
    assert first.merge(second) is first
    assert second.num_samples == n_second and first.num_samples == len(y)
    assert max_difference(first.compute(W, b), one.compute(W, b)) <= TOL
    assert max_difference(first.compute(W, b), nc_metrics(H, y, W, b, K=K)) <= TOL
    # merging into an empty accumulator copies the settings it lacked
    empty = NCAccumulator(K).merge(one)
    assert max_difference(empty.compute(W, b), one.compute(W, b)) == 0.0


def test_reset_forgets_everything():
    """After reset the accumulator is empty (compute raises), accepts another feature dimension, and computes
    the metrics of the new batches only."""
    acc = NCAccumulator(3)
    H, y, W, b = gaussian_classes(3, 5, [10, 12, 8])
    acc.update(H, y)
    acc.reset()
    assert acc.num_samples == 0 and acc.nbytes == 0
    with pytest.raises(ValueError, match="no data"):
        acc.compute()
    H2, y2, W2, b2 = gaussian_classes(3, 7, [6, 9, 11], seed=4)
    acc.update(H2, y2)
    assert max_difference(acc.compute(W2, b2), nc_metrics(H2, y2, W2, b2, K=3)) <= TOL


@pytest.mark.parametrize("make,match", [
    (lambda: NCAccumulator(1), "K must be"),
    (lambda: NCAccumulator(3, global_mean="median"), "global_mean"),
    (lambda: NCAccumulator(3).update(np.zeros((4, 2)), [0, 1, 2]), "rows"),
    (lambda: NCAccumulator(3).update(np.zeros((3, 2)), [0, 1, 3]), "labels must lie in 0..2"),
    (lambda: NCAccumulator(3).update(np.zeros((3, 2)), [0, -1, 2]), "labels must lie in 0..2"),
    (lambda: NCAccumulator(3).update(np.zeros(3), [0, 1, 2]), "2-D"),
    (lambda: NCAccumulator(3).update(np.zeros((3, 2)), [0.0, 1.0, 2.0]), "integers"),
    (lambda: NCAccumulator(3).update(np.zeros((3, 2)), [[0, 1, 2]]), "1-D"),
    (lambda: _two_batches(np.zeros((3, 2)), np.zeros((3, 4))), "dimension 4, earlier batches had 2"),
    (lambda: NCAccumulator(3).compute(), "no data"),
    (lambda: _two_batches(np.ones((3, 2)), np.ones((3, 2)), labels=[0, 0, 1]).compute(), "without samples"),
    (lambda: _two_batches(np.ones((3, 2)), np.ones((3, 2))).compute(W=np.ones((3, 5))), "W must have shape"),
    (lambda: NCAccumulator(3).merge(NCAccumulator(4)), "K = 3 and K = 4"),
    (lambda: _two_batches(np.ones((3, 2)), np.ones((3, 2))).compute(distributed=True, reduce=lambda t: t),
     "either"),
])
def test_bad_input_is_a_clear_value_error(make, match):
    """K < 2, a bad global mean, shape mismatches, labels out of range or not integers, a changing feature
    dimension, no data, an empty class, a wrong W shape, merging different K: one ValueError that says so."""
    with pytest.raises(ValueError, match=match):
        make()


def _two_batches(H1, H2, labels=(0, 1, 2)):
    acc = NCAccumulator(3)
    acc.update(H1, list(labels))
    acc.update(H2, list(labels))
    return acc


def test_reduce_hook_with_an_empty_shard():
    """A `reduce` that sums over simulated shards: a process without data takes part with an empty shard and
    gets the metrics of the union (here: two identical shards, the reduce doubles every statistic, and a
    shard-less process whose reduce adds twice the data's statistics)."""
    H, y, W, b = gaussian_classes(4, 6, [10, 20, 15, 5])
    acc = NCAccumulator(4)
    acc.update(H, y)
    ref = nc_metrics(H, y, W, b, K=4)
    assert max_difference(acc.compute(W, b, reduce=lambda t: 2 * t), ref) <= TOL
    # the other process's statistics, in the order of its reductions (consistency check, first pass,
    # second pass): the empty process's reduce adds them to its own (zero) statistics
    recorded = []
    acc.compute(W, b, reduce=lambda t: recorded.append(t.clone()) or t)
    others = iter(recorded)
    out = NCAccumulator(4).compute(W, b, reduce=lambda t: t + next(others))
    assert max_difference(out, ref) <= TOL


# ------------------------------------------------------------------- sufficient statistics (keep_features=False)

ONE_PASS_UNMEASURED = ("nc4", "ncc_accuracy")  # they compare every sample with the final means


def in_two_processes(*jobs):
    """Run each job(reduce) in its own thread; `reduce` sums a tensor over the jobs (an all-reduce)."""
    import threading

    barrier = threading.Barrier(len(jobs), timeout=120)  # a failing job breaks the barrier, not the suite
    slots = [None] * len(jobs)
    results = [None] * len(jobs)

    def run(i, job):
        def reduce(t):
            slots[i] = t.clone()
            barrier.wait()
            total = sum(slots)
            barrier.wait()
            return total

        results[i] = job(reduce)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def assert_statistics_agree(ours, ref, accuracy=True, tol=TOL):
    """Every key of nc_metrics to `tol` (relative for large values) except nc4 and ncc_accuracy, which one pass
    cannot give (NaN); the accuracy too when the decisions were passed to update."""
    for key, value in ref.items():
        if key in ONE_PASS_UNMEASURED or (key == "accuracy" and not accuracy):
            assert math.isnan(ours[key]), key
        elif math.isnan(value):
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(value, rel=tol, abs=tol), key


@pytest.mark.parametrize("side", ["auto", "classes", "features"])
@pytest.mark.parametrize("case", list(CASES))
def test_statistics_equal_nc_metrics_in_one_pass(case, side):
    """keep_features=False: counts, class sums and the shifted d×d scatter give nc_metrics of the stacked
    features to 1e-10 (float64), on either side, with W and b; the accuracy from the decisions passed to
    update; the memory does not grow with N."""
    K, d, counts = CASES[case]
    H, y, W, b = gaussian_classes(K, d, counts)
    acc = NCAccumulator(K, keep_features=False, side=side)
    predicted = np.argmax(H @ W.T + b, axis=1)
    lo = 0
    for Hb, yb in uneven_batches(H, y):
        acc.update(Hb, yb, predicted[lo:lo + len(yb)])
        lo += len(yb)
    assert acc.num_samples == len(y)
    assert acc.nbytes == (2 * K * d + d * d + K) * 8 + K * 8
    assert_statistics_agree(acc.compute(W, b), nc_metrics(H, y, W, b, K=K, side=side))
    assert_statistics_agree(acc.compute(), nc_metrics(H, y, K=K, side=side), accuracy=False)


def test_statistics_keep_the_digits_of_collapsed_classes():
    """Features at 1e3 from the origin with a within-class spread of 1e-6 (a spread 1e-9 of the means): raw
    second moments would cancel every digit of Σ_W (1e-12 against 1e6); the per-class shifts keep them —
    NC1 and tr Σ_W to 1e-8 of the two-pass values."""
    rng = np.random.default_rng(4)
    K, d, n = 6, 10, 50
    y = np.repeat(np.arange(K), n)
    H = 1e3 * rng.normal(size=(K, d))[y] + 1e-6 * rng.normal(size=(K * n, d))
    acc = NCAccumulator(K, keep_features=False)
    for Hb, yb in uneven_batches(H, y):
        acc.update(Hb, yb)
    ours, ref = acc.compute(), nc_metrics(H, y)
    for key in ("nc1", "tr_sigma_W", "cdnv"):
        assert ours[key] == pytest.approx(ref[key], rel=1e-8), key


def test_statistics_merge_and_reduce_over_shards_with_their_own_shifts():
    """Two shards see the classes in different orders, so their shifts differ: merge moves one onto the other's
    shifts, and a reduce sums each shard's scatter about the global means — both equal one pass over all."""
    K, d, counts = CASES["d<K imbalanced"]
    H, y, W, b = gaussian_classes(K, d, counts)
    half = len(y) // 2
    first, second = NCAccumulator(K, keep_features=False), NCAccumulator(K, keep_features=False)
    first.update(H[:half], y[:half])
    second.update(H[half:][::-1].copy(), y[half:][::-1].copy())
    ref = nc_metrics(H, y, W, b, K=K)
    merged = NCAccumulator(K, keep_features=False).merge(first).merge(second)
    assert_statistics_agree(merged.compute(W, b), ref, accuracy=False)
    # data parallel: two threads stand for two processes, their reduce an all-reduce over a barrier
    results = in_two_processes(lambda reduce: first.compute(W, b, reduce=reduce),
                               lambda reduce: second.compute(W, b, reduce=reduce))
    for out in results:
        assert_statistics_agree(out, ref, accuracy=False)
    with pytest.raises(ValueError, match="features with one that keeps statistics"):
        NCAccumulator(K).merge(first)


def test_tracker_with_statistics_takes_the_layer_s_decisions():
    """NCTracker(keep_features=False) records the Linear's argmax at each update: its accuracy is the model's
    (the same W), every other key but nc4/ncc_accuracy equals nc_metrics."""
    K, d = 5, 3
    model = mlp(5, d, K).eval()
    x, y = torch.randn(80, 5, dtype=torch.float64), torch.arange(80) % K
    with NCTracker(model, "5", keep_features=False) as tracker:
        for i in range(0, 80, 30):
            tracker.update(x[i:i + 30], y[i:i + 30])
        out = tracker.compute()
    W, b = model[5].weight.detach(), model[5].bias.detach()
    assert_statistics_agree(out, nc_metrics(penultimate(model, x), y, W, b, K=K))


def test_absent_classes_in_the_accumulator():
    """missing="exclude" (a vocabulary whose rare tokens did not occur): the metrics of the classes present and
    the count left out; the default is the UFM's error."""
    K, d = 6, 4
    H, y, W, b = gaussian_classes(K, d, [20] * K)
    keep = y != 3
    for keep_features in (True, False):
        acc = NCAccumulator(K, keep_features=keep_features, missing="exclude")
        acc.update(H[keep], y[keep])
        out = acc.compute(W, b)
        assert out["excluded_classes"] == 1.0
        ref = nc_metrics(H[keep], y[keep], W, b, K=K, missing="exclude")
        assert out["nc1"] == pytest.approx(ref["nc1"], rel=1e-10)
        strict = NCAccumulator(K, keep_features=keep_features)
        strict.update(H[keep], y[keep])
        with pytest.raises(ValueError, match="without samples: \\[3\\]"):
            strict.compute(W, b)


# ----------------------------------------------------------------------------------------------- the hook

def mlp(d_in, d, K, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 12), nn.ReLU(), nn.Dropout(0.5), nn.Linear(12, d), nn.Tanh(),
                         nn.Linear(d, K)).double()


def penultimate(model, x):
    """The input of the last Linear, computed by hand (eval mode: dropout is the identity)."""
    with torch.no_grad():
        return torch.tanh(model[3](torch.relu(model[0](x))))


def no_hooks_left(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("layer", ["5", "module"], ids=["by name", "by module"])
def test_feature_hook_records_the_penultimate_features(layer):
    """FeatureHook on the classifier records its input, equal to the hand-computed penultimate activations,
    detached; with input=False the output (the logits); both hooks are gone after the with-block."""
    model = mlp(5, 8, 4).eval()
    x = torch.randn(30, 5, dtype=torch.float64)
    target = model[5] if layer == "module" else layer
    with FeatureHook(model, target) as inputs, FeatureHook(model, target, input=False) as outputs:
        logits = model(x)
        assert inputs.calls == 1
    assert torch.equal(inputs.features, penultimate(model, x))
    assert inputs.features.grad_fn is None and not inputs.features.requires_grad
    assert torch.equal(outputs.features, logits.detach())
    assert no_hooks_left(model)


def test_feature_hook_feeds_an_accumulator():
    """The pattern `acc.update(hook.features, y)` after each forward gives nc_metrics of the penultimate
    features with the classifier's W and b."""
    K = 3
    model = mlp(5, 6, K).eval()
    x = torch.randn(50, 5, dtype=torch.float64)
    y = torch.arange(50) % K
    acc = NCAccumulator(K)
    with FeatureHook(model, "5") as hook:
        for i in range(0, 50, 14):
            model(x[i:i + 14])
            acc.update(hook.features, y[i:i + 14])
    W, b = model[5].weight.detach(), model[5].bias.detach()
    ref = nc_metrics(penultimate(model, x), y, W, b, K=K)
    assert max_difference(acc.compute(W, b), ref) <= TOL
    assert no_hooks_left(model)


@pytest.mark.parametrize("K,d", [(4, 8), (6, 3), (2, 5)], ids=["d>K", "d<K", "K=2"])
def test_tracker_equals_nc_metrics_with_the_linear_layer(K, d):
    """NCTracker reads W and b from the nn.Linear and equals nc_metrics on the hand-computed penultimate
    activations to 1e-10; the forward runs in eval mode without gradients and restores every module's mode;
    the hooks are removed on exit."""
    model = mlp(5, d, K).train()
    model[2].eval()  # a module in eval mode inside a training model keeps its own mode
    x = torch.randn(70, 5, dtype=torch.float64)
    y = torch.from_numpy(np.random.default_rng(0).permutation(np.arange(70) % K))
    with NCTracker(model, "5") as tracker:
        assert tracker.K == K
        for i in range(0, 70, 23):
            logits = tracker.update(x[i:i + 23], y[i:i + 23])
            assert not logits.requires_grad
        out = tracker.compute()
    assert model.training and model[0].training and not model[2].training
    assert no_hooks_left(model)
    model.eval()
    W, b = model[5].weight.detach(), model[5].bias.detach()
    ref = nc_metrics(penultimate(model, x), y, W, b, K=K)
    assert max_difference(out, ref) <= TOL


def test_tracker_with_a_nested_name_and_bias_free_layer():
    """A dotted name inside a model, a bias-free classifier: W from the layer, no bias."""
    K = 3
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Linear(4, 5), nn.Tanh()))
    model.add_module("head", nn.Sequential())
    model.head.add_module("fc", nn.Linear(5, K, bias=False))
    model = model.double()
    x = torch.randn(40, 4, dtype=torch.float64)
    y = torch.arange(40) % K
    tracker = NCTracker(model, "head.fc")
    tracker.update(x, y)
    out = tracker.compute()
    tracker.remove()
    with torch.no_grad():
        H = model.body(x)
    assert max_difference(out, nc_metrics(H, y, model.head.fc.weight, K=K)) <= TOL
    assert no_hooks_left(model)


def test_tracker_errors():
    """Unknown layer name, a non-Linear layer without K, a layer that does not run in the forward."""
    model = mlp(5, 4, 3)
    with pytest.raises(ValueError, match="no submodule 'fc'"):
        NCTracker(model, "fc")
    with pytest.raises(ValueError, match="K is needed"):
        NCTracker(model, "4")
    model = WithUnusedHead()
    with NCTracker(model, "unused") as tracker, pytest.raises(RuntimeError, match="did not run"):
        tracker.update(torch.randn(3, 5), [0, 1, 2])
    assert no_hooks_left(model)


class WithUnusedHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 3)
        self.unused = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(x)


def test_public_names_and_docstring_examples():
    """`analysis` exports the tracking names and the main metrics; the docstring examples run."""
    for name in ("NCAccumulator", "FeatureHook", "NCTracker", "nc_metrics", "nc_metrics_streaming", "gnc_metrics",
                 "class_means"):
        assert name in analysis.__all__ and hasattr(analysis, name)
    result = doctest.testmod(analysis.tracking, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0


# ------------------------------------------------------------------------------------------ two processes

def _gloo_worker(rank, world, init, data_path, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        data = np.load(data_path)
        H, y, W, b, cut = data["H"], data["y"], data["W"], data["b"], int(data["cut"])
        K = int(data["K"])
        results = {}
        shard = slice(0, cut) if rank == 0 else slice(cut, None)  # unequal shards
        for global_mean in ("samples", "classes"):
            for classifier in ("none", "W and b"):
                acc = NCAccumulator(K, global_mean=global_mean)
                for Hb, yb in uneven_batches(H[shard], y[shard], seed=rank):
                    acc.update(Hb, yb)
                Wc, bc = (None, None) if classifier == "none" else (W, b)
                results[f"{global_mean}, {classifier}"] = acc.compute(Wc, bc, distributed=True)
        # rank 1 without data: it still takes part and gets the metrics of rank 0's shard
        acc = NCAccumulator(K)
        if rank == 0:
            acc.update(H, y)
        results["empty shard"] = acc.compute(W, b, distributed=True)
        # a different feature dimension on one process: both raise the same error, neither hangs
        acc = NCAccumulator(K)
        acc.update(H[:, : 3 + rank], y)
        try:
            acc.compute(distributed=True)
            results["mismatch"] = "no error"
        except ValueError as e:
            results["mismatch"] = str(e)
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(results, f)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_get_the_metrics_of_the_union(tmp_path):
    """Two processes (gloo), unequal shards of the same float64 data, compute(distributed=True): both get
    nc_metrics of the union to 1e-10 (both global means, with and without W and b); an empty shard takes
    part; a feature-dimension mismatch is the same ValueError on both processes."""
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    import torch.multiprocessing as mp

    K, d = 5, 7
    H, y, W, b = gaussian_classes(K, d, [30, 12, 25, 8, 18])
    np.savez(tmp_path / "data.npz", H=H, y=y, W=W, b=b, cut=37, K=K)
    init = f"file://{tmp_path / 'init'}"
    ctx = mp.spawn(_gloo_worker, args=(2, init, str(tmp_path / "data.npz"), str(tmp_path)), nprocs=2,
                   join=False)
    deadline = time.monotonic() + 60
    while not ctx.join(timeout=0.2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the gloo processes did not finish in 60 s")
    for rank in (0, 1):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for global_mean in ("samples", "classes"):
            for classifier, (Wc, bc) in (("none", (None, None)), ("W and b", (W, b))):
                ref = nc_metrics(H, y, Wc, bc, K=K, global_mean=global_mean)
                assert max_difference(results[f"{global_mean}, {classifier}"], ref) <= TOL
        assert max_difference(results["empty shard"], nc_metrics(H, y, W, b, K=K)) <= TOL
        assert "disagree on the feature dimension" in results["mismatch"]
