"""NCAccumulator.state_dict / load_state_dict (and SufficientStats'): a dict of tensors and plain values that
torch.load(..., weights_only=True) reads back, and a continuation after the load that gives exactly (==, float64)
the metrics of an accumulator that was never interrupted."""

import math

import numpy as np
import pytest
import torch

from analysis.metrics import SufficientStats
from analysis.tracking import NCAccumulator

K, D = 4, 6


def data(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(K), [30, 17, 22, 11]))
    H = (3.0 * rng.normal(size=(K, D)))[y] + rng.normal(size=(len(y), D))
    W, b = rng.normal(size=(K, D)), 0.1 * rng.normal(size=K)
    cuts = [0, 7, 8, 31, 50, 64, len(y)]
    batches = [(torch.from_numpy(H[lo:hi].astype(dtype)), torch.from_numpy(y[lo:hi]))
               for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)]
    preds = [torch.from_numpy((H[lo:hi] @ W.T + b).argmax(1)) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)]
    return batches, preds, W, b


def identical(a: dict, b: dict) -> bool:
    """The same keys and bit-for-bit the same numbers (NaN where the other is NaN)."""
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) if isinstance(a[k], float) and math.isnan(a[k]) else a[k] == b[k]
        for k in a)


@pytest.mark.parametrize("keep_features", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cut", [0, 3, 6])
def test_a_saved_and_loaded_accumulator_continues_exactly(tmp_path, keep_features, dtype, cut):
    """Interrupted after `cut` batches (0: before any, 6: after all), saved with torch.save, read back with
    weights_only=True into a fresh accumulator and continued: the same metrics, ==, as without the interruption."""
    batches, preds, W, b = data(dtype)
    whole = NCAccumulator(K, keep_features=keep_features)
    first = NCAccumulator(K, keep_features=keep_features)
    for i, ((H, y), p) in enumerate(zip(batches, preds, strict=True)):
        whole.update(H, y, p)
        if i < cut:
            first.update(H, y, p)
    torch.save(first.state_dict(), tmp_path / "acc.pt")
    state = torch.load(tmp_path / "acc.pt", weights_only=True)
    assert state["kind"] == ("features" if keep_features else "statistics") and state["K"] == K
    resumed = NCAccumulator(K, keep_features=keep_features).load_state_dict(state)
    assert resumed.num_samples == first.num_samples
    for (H, y), p in list(zip(batches, preds, strict=True))[cut:]:
        resumed.update(H, y, p)
    ref = whole.compute(W, b)
    assert identical(resumed.compute(W, b), ref)
    assert identical(resumed.compute(), whole.compute())
    assert not math.isnan(ref["nc1"]) and (math.isnan(ref["nc4"]) != keep_features)


def test_the_state_is_plain_and_a_snapshot():
    """Tensors and plain Python values only; later updates do not change a state taken before them (statistics are
    copied, stored batches are never changed in place)."""
    batches, preds, _, _ = data()
    for keep in (True, False):
        acc = NCAccumulator(K, keep_features=keep)
        acc.update(*batches[0])
        state = acc.state_dict()
        before = {k: v.clone() for k, v in (state["stats"] if not keep else {}).items() if isinstance(v, torch.Tensor)}
        acc.update(*batches[1])

        def plain(v):
            if isinstance(v, dict):
                return all(isinstance(k, str) and plain(x) for k, x in v.items())
            if isinstance(v, list):
                return all(plain(x) for x in v)
            return v is None or isinstance(v, (torch.Tensor, str, int, float, bool))

        assert plain(state)
        assert state["dim"] == D and state["dtype"] == "float64"
        if keep:
            assert len(state["features"]) == 1 and state["features"][0].shape == (7, D)
        else:
            assert all(torch.equal(before[k], state["stats"][k]) for k in before)
            assert int(state["stats"]["counts"].sum()) == 7


def test_a_load_replaces_what_the_accumulator_held():
    batches, _, W, b = data()
    acc = NCAccumulator(K)
    acc.update(*batches[0])
    empty = NCAccumulator(K).state_dict()
    assert acc.load_state_dict(empty).num_samples == 0
    src = NCAccumulator(K)
    for H, y in batches:
        src.update(H, y)
    other = NCAccumulator(K)
    other.update(*batches[2])
    assert identical(other.load_state_dict(src.state_dict()).compute(W, b), src.compute(W, b))


def test_a_state_that_does_not_fit_is_refused_naming_the_mismatch():
    batches, _, _, _ = data()
    feats, stats = NCAccumulator(K), NCAccumulator(K, keep_features=False)
    for acc in (feats, stats):
        acc.update(*batches[0])
    with pytest.raises(ValueError, match="^the state has K = 4 classes, this accumulator K = 3$"):
        NCAccumulator(3).load_state_dict(feats.state_dict())
    with pytest.raises(ValueError, match=r"holds features \(keep_features=True\), this accumulator keeps statistics"):
        NCAccumulator(K, keep_features=False).load_state_dict(feats.state_dict())
    with pytest.raises(ValueError, match=r"holds statistics \(keep_features=False\), this accumulator keeps features"):
        NCAccumulator(K).load_state_dict(stats.state_dict())
    narrow = NCAccumulator(K)
    narrow.update(torch.zeros(2, 3, dtype=torch.float64), [0, 1])
    with pytest.raises(ValueError, match="^the state has feature dimension 6, this accumulator's batches have 3$"):
        narrow.load_state_dict(feats.state_dict())
    bad = feats.state_dict()
    bad["dim"] = 5
    with pytest.raises(ValueError, match=r"state\['features'\]\[0\] must be a tensor of shape \(n, dim\) with dim = 5"):
        NCAccumulator(K).load_state_dict(bad)
    bad = stats.state_dict()
    bad["dim"] = 5
    with pytest.raises(ValueError, match=r"SufficientStats.state_dict\(\) of dimension dim = 5"):
        NCAccumulator(K, keep_features=False).load_state_dict(bad)
    bad = feats.state_dict()
    bad["dtype"] = "float77"
    with pytest.raises(ValueError, match="must name a torch dtype"):
        NCAccumulator(K).load_state_dict(bad)
    with pytest.raises(ValueError, match="^state lacks kind, dim"):
        NCAccumulator(K).load_state_dict({"K": K})
    with pytest.raises(TypeError, match="^state must be the dict of NCAccumulator.state_dict"):
        NCAccumulator(K).load_state_dict([1])


def test_sufficient_stats_round_trip_and_mismatches(tmp_path):
    batches, preds, W, b = data()
    st = SufficientStats(K, D)
    for (H, y), p in zip(batches[:3], preds[:3], strict=True):
        st.add(H, y, p)
    torch.save(st.state_dict(), tmp_path / "st.pt")
    again = SufficientStats(K, D).load_state_dict(torch.load(tmp_path / "st.pt", weights_only=True))
    for (H, y), p in zip(batches[3:], preds[3:], strict=True):
        st.add(H, y, p)
        again.add(H, y, p)
    assert identical(again.metrics(W, b), st.metrics(W, b))
    with pytest.raises(ValueError, match="^the state has feature dimension d = 6, these statistics d = 5$"):
        SufficientStats(K, 5).load_state_dict(st.state_dict())
    bad = st.state_dict()
    bad["scatter"] = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=r"^state\['scatter'\] must be a tensor of shape \(6, 6\)"):
        SufficientStats(K, D).load_state_dict(bad)
