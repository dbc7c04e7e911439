"""Neural-collapse tracking for any network: an accumulator of penultimate features and a forward hook.

The metrics are those of `analysis.metrics` (NC1–NC4 and their companions, Papyan, Han & Donoho 2020,
"Prevalence of neural collapse during the terminal phase of deep learning training", PNAS 117(40);
DESIGN §5.1): the formulas, the keys and the numbers are `analysis.metrics.nc_metrics`'s, computed by
`analysis.metrics.nc_metrics_streaming` on the batches collected here. Nothing is re-derived in this module.

- `NCAccumulator(K)`: `update(features, labels)` per batch, `compute(W, b)` → the dict of `nc_metrics` on
  the stacked features; `merge`, `reset`; `compute(..., distributed=True)` for DDP (every process keeps
  its own shard and gets the metrics of the union).
- `FeatureHook(model, "fc")`: records the input of a layer (the penultimate features) on every forward.
- `NCTracker(model, "fc")`: both together; `update(x, y)` runs the model and feeds the accumulator,
  `compute()` reads W and b from the layer when it is an `nn.Linear`.

Two ways to accumulate (`keep_features`):
- True (the default): the features themselves. The exact metrics need two passes (class means first, then the
  deviations from them; NC1's within-class covariance and NC4's nearest-mean decisions depend on the final
  means), so an accumulator that sees every batch once keeps them: N·d elements (N samples seen, d features) in
  the storage dtype, on `store_device` (pass `store_device="cpu"` to keep GPU memory free; each batch is moved
  back to the compute device one at a time during `compute`). Every metric, exactly.
- False: sufficient statistics (`analysis.metrics.SufficientStats`: counts, class sums, d×d second moments about
  per-class shifts), O(K·d + d²) memory whatever N. One pass; every metric is exact except the two that compare
  each sample with the final means (nc4, ncc_accuracy: NaN), and the accuracy is that of the decisions passed
  to `update` (NCTracker passes the tracked layer's own). For vocabularies of 10⁴–10⁵ classes and long streams.
Either way the sums run in float64 whatever the storage dtype (float32 features of size 1e20 have squares beyond
float32's range; MPS, which has no float64, computes in float32), non-finite features, W or b are refused (their
metrics would mean nothing), the geometry is computed on the smaller side (K×K or d×d, `side`), and classes absent
from the data are an error or excluded (`missing`, the count reported as `excluded_classes`).
If the data can be iterated twice, `nc_metrics_streaming` needs only O(K·d + min(K, d)²) memory too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from analysis._arrays import as_features, as_labels, as_tensor
from analysis.layers import LayerHooks, check_layer_fits, stats_layer_metrics
from analysis.metrics import DEFAULT_RTOL, SufficientStats, check_options, nc_metrics_streaming

__all__ = ["NCAccumulator", "FeatureHook", "NCTracker", "distributed_sum"]

Reduce = Callable[[torch.Tensor], torch.Tensor]


def distributed_sum(group: Any = None) -> Reduce:
    """A `reduce` for `nc_metrics_streaming` / `NCAccumulator.compute`: the sum of a tensor over the processes
    of `group` (default: the whole world) with `torch.distributed.all_reduce`.

    Every process of the group must call the metrics with it (it is a collective). With the NCCL backend, CPU
    tensors are moved to the current CUDA device for the reduction and back. The input is not modified.

    >>> import torch
    >>> callable(distributed_sum())   # needs torch.distributed.init_process_group(...) only when called
    True
    """
    import torch.distributed as dist

    def reduce(t: torch.Tensor) -> torch.Tensor:
        on = t.device
        if dist.get_backend(group) == "nccl" and on.type != "cuda":
            on = torch.device("cuda", torch.cuda.current_device())
        out = t.to(on, copy=True).contiguous()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out.to(t.device)

    return reduce


def _device(x: Any, name: str = "device") -> torch.device | None:
    """`x` as a torch.device that this machine has (None stays None): TypeError/ValueError naming the argument."""
    if x is None:
        return None
    if not isinstance(x, (str, torch.device)):
        raise TypeError(f"{name} must be a torch.device, a string such as 'cpu' or 'cuda:0', or None, got "
                        f"{type(x).__name__}")
    try:
        device = torch.device(x)
    except RuntimeError as e:
        raise ValueError(f"{name}={x!r} is not a device: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={x!r}, but CUDA is not available on this machine: use 'cpu' (or None)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{name}={x!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={x!r}, but MPS is not available on this machine: use 'cpu' (or None)")
    return device


def _compute_dtype(device: torch.device | None) -> torch.dtype:
    """The metrics are accumulated and computed in float64 whatever the features' dtype (float32 features of size
    1e20 have squares beyond float32's range); MPS has no float64 and computes in float32."""
    return torch.float32 if device is not None and device.type == "mps" else torch.float64


def _check_finite(name: str, t: torch.Tensor) -> None:
    """Non-finite inputs would give numbers that mean nothing (an all-NaN W: accuracy 1/K): one line naming them."""
    bad = int((~torch.isfinite(t)).sum()) if t.is_floating_point() else 0
    if bad:
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf) of {t.numel()}: the NC metrics of such "
                         "numbers mean nothing (a diverged network?); drop the batch or fix the model")


class NCAccumulator:
    """Collects penultimate features batch by batch and computes the NC metrics of all of them.

    `compute(W, b)` returns exactly the dict that `analysis.metrics.nc_metrics(H, y, W, b, K=K)` returns on
    the stacked features H = cat(features), y = cat(labels) (same keys, same numbers up to float rounding
    of the summation order): NC1 = tr(Σ_W Σ_B^†)/K, NC2/NC3 the distances of MMᵀ/WMᵀ to the simplex-ETF
    Gram, NC4 the classifier/nearest-mean disagreement, and companions (Papyan, Han & Donoho 2020; the
    formulas are in `analysis.metrics`). Keys that need W are NaN without it.

    Parameters: K the number of classes (≥ 2); `global_mean` "samples" (μ_G = mean of all samples, Papyan
    et al.) or "classes" (unweighted mean of the class means); `rtol` the relative cut-off of the
    pseudo-inverse in NC1 (as in `nc_metrics`); `device` where `compute` runs (default: the device of the
    first batch); `store_device` where the features (or the statistics) are kept (default: where they arrive;
    "cpu" saves GPU memory); `dtype` the storage dtype (default: that of the first batch; later batches are cast
    to it); `keep_features` (module docstring: True keeps the features for the exact two-pass metrics, False keeps
    sufficient statistics in O(K·d + d²) memory, without nc4 and ncc_accuracy); `side` "auto", "classes" (K×K)
    or "features" (d×d); `missing` "error" or "exclude" (classes without samples; `excluded_classes` counts them).

    Memory (`nbytes`): with the features kept, every feature it is given (a detached copy, never an autograd
    graph): N·d elements for N samples of dimension d; else the statistics, about 2·K·d + d² numbers.

    Data parallel (DDP): each process updates with its own shard and calls
    `compute(W, b, distributed=True)` (all processes, same W and b); both passes' statistics are summed
    over the process group, so every process gets the metrics of the union, exactly. A process may have
    an empty shard. `reduce=` takes any other sum over shards.

    >>> import torch
    >>> from analysis.metrics import nc_metrics
    >>> g = torch.Generator().manual_seed(0)
    >>> H = torch.randn(60, 5, generator=g, dtype=torch.float64)
    >>> y = torch.arange(60) % 3
    >>> H += 4 * torch.eye(3, 5, dtype=torch.float64)[y]      # three separated classes
    >>> acc = NCAccumulator(3)
    >>> for i in range(0, 60, 25):                             # batches of 25, 25, 10
    ...     acc.update(H[i:i + 25], y[i:i + 25])
    >>> acc.num_samples
    60
    >>> out = acc.compute()
    >>> abs(out["nc1"] - nc_metrics(H, y, K=3)["nc1"]) < 1e-12
    True
    >>> sorted(out) == sorted(nc_metrics(H, y, K=3))
    True
    >>> lean = NCAccumulator(3, keep_features=False)          # one pass, no features kept
    >>> for i in range(0, 60, 25):
    ...     lean.update(H[i:i + 25], y[i:i + 25])
    >>> abs(lean.compute()["nc1"] - out["nc1"]) < 1e-12, lean.nbytes < H.numel() * 8
    (True, True)
    """

    def __init__(
        self,
        K: int,
        *,
        global_mean: str = "samples",
        rtol: float = DEFAULT_RTOL,
        device: torch.device | str | None = None,
        store_device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        keep_features: bool = True,
        side: str = "auto",
        missing: str = "error",
    ) -> None:
        check_options(K, global_mean=global_mean, rtol=rtol, side=side, missing=missing)
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        if not isinstance(keep_features, bool):
            raise TypeError(f"keep_features must be True or False, got {keep_features!r}")
        self.K = int(K)
        self.global_mean = global_mean
        self.rtol = rtol
        self.device = _device(device, "device")
        self.store_device = _device(store_device, "store_device")
        self.dtype = dtype
        self.keep_features = keep_features
        self.side = side
        self.missing = missing
        self.reset()

    def reset(self) -> None:
        """Forget every batch (the settings K, global_mean, rtol, devices and a given dtype stay).

        >>> acc = NCAccumulator(2)
        >>> acc.update([[0.0], [1.0]], [0, 1])
        >>> acc.reset()
        >>> acc.num_samples
        0
        """
        self._batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._stats: SufficientStats | None = None
        self._dim: int | None = None
        self._dtype: torch.dtype | None = self.dtype
        self._compute_device: torch.device | None = self.device

    @property
    def num_samples(self) -> int:
        """Number of samples collected so far (on this process).

        >>> NCAccumulator(3).num_samples
        0
        """
        if self._stats is not None:
            return int(self._stats.counts.sum())
        return sum(int(y.shape[0]) for _, y in self._batches)

    @property
    def nbytes(self) -> int:
        """Memory held by the stored features and labels (≈ N·d·itemsize), or by the statistics, in bytes.

        >>> acc = NCAccumulator(2, dtype=torch.float64)
        >>> acc.update([[0.0, 1.0], [1.0, 0.0]], [0, 1])
        >>> acc.nbytes   # 2·2 float64 features + 2 int64 labels
        48
        """
        if self._stats is not None:
            return self._stats.nbytes
        return sum(H.numel() * H.element_size() + y.numel() * y.element_size() for H, y in self._batches)

    def update(self, features: Any, labels: Any, predictions: Any = None) -> None:
        """Add one batch: features (n, d) and integer labels (n,) in 0..K−1 (numpy arrays or torch tensors);
        `predictions` (n,): the classifier's decisions for the batch, which give the accuracy when the features
        are not kept (with `keep_features` the accuracy comes from the W, b given to `compute`).

        The features are detached and copied (to `store_device`, in the storage dtype), so later in-place
        changes to the caller's tensors or arrays do not affect the accumulator, and no graph is kept.

        >>> acc = NCAccumulator(2)
        >>> acc.update(torch.ones(3, 4, requires_grad=True), torch.tensor([0, 1, 1]))
        >>> acc.num_samples
        3
        """
        H = as_features(features)
        y = as_labels(labels)
        if H.shape[0] != y.shape[0]:
            raise ValueError(f"features have {H.shape[0]} rows but labels have {y.shape[0]} entries")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.K):
            raise ValueError(f"labels must lie in 0..{self.K - 1}, got range {int(y.min())}..{int(y.max())}")
        if self._dim is not None and H.shape[1] != self._dim:
            raise ValueError(f"features have dimension {H.shape[1]}, earlier batches had {self._dim}")
        _check_finite("features", H)
        self._dim = int(H.shape[1])
        if self._dtype is None:
            self._dtype = H.dtype
        if self._compute_device is None:
            self._compute_device = H.device
        if H.shape[0] == 0:
            return
        store = self.store_device if self.store_device is not None else H.device
        if not self.keep_features:
            work = _compute_dtype(store)
            if self._stats is None:
                self._stats = SufficientStats(self.K, self._dim, dtype=work, device=store)
            # the storage dtype's rounding first (the features kept would be these), then float64 sums
            self._stats.add(H.detach().to(self._dtype).to(work), y.to(H.device), predictions)
            return
        H = H.to(device=store, dtype=self._dtype, copy=True)
        y = y.to(device=store, copy=True)
        self._batches.append((H, y))

    def merge(self, other: NCAccumulator) -> NCAccumulator:
        """Add the batches (or statistics) of `other` (e.g. another data loader or worker) to this accumulator;
        returns self. Both must keep the same kind (features or statistics).

        `other` is left unchanged; its stored features are shared, not copied (moved only when its
        store device differs).

        >>> a, b = NCAccumulator(2), NCAccumulator(2)
        >>> a.update([[0.0], [1.0]], [0, 1])
        >>> b.update([[0.5], [2.0], [3.0]], [0, 1, 1])
        >>> a.merge(b).num_samples
        5
        """
        if not isinstance(other, NCAccumulator):
            raise TypeError(f"can only merge an NCAccumulator, got {type(other).__name__}")
        if other.K != self.K:
            raise ValueError(f"cannot merge accumulators with K = {self.K} and K = {other.K}")
        if other.keep_features != self.keep_features:
            raise ValueError("cannot merge an accumulator that keeps features with one that keeps statistics")
        if self._dim is not None and other._dim is not None and other._dim != self._dim:
            raise ValueError(f"cannot merge features of dimension {self._dim} and {other._dim}")
        if self._dim is None:
            self._dim = other._dim
        if self._dtype is None:
            self._dtype = other._dtype
        if self._compute_device is None:
            self._compute_device = other._compute_device
        if other._stats is not None:
            if self._stats is None:
                store = self.store_device if self.store_device is not None else other._stats.device
                self._stats = SufficientStats(self.K, other._stats.d, dtype=_compute_dtype(store), device=store)
            self._stats.merge(other._stats)
        batches = list(other._batches)  # a copy: merging an accumulator with itself doubles it once
        for H, y in batches:
            store = self.store_device if self.store_device is not None else H.device
            self._batches.append((H.to(device=store, dtype=self._dtype), y.to(store)))
        return self

    def state_dict(self) -> dict[str, Any]:
        """What the accumulator has collected, as a dict of tensors and plain Python values (no classes):
        `torch.save(acc.state_dict(), f)`, later `acc.load_state_dict(torch.load(f, weights_only=True))`, e.g. in a
        training checkpoint. Keys: K, kind ("features" or "statistics"), dim and dtype (None before the first
        batch), and the data: `features` and `labels`, the stored batches as lists of tensors (shared, not copied:
        the accumulator never changes a stored batch), or `stats`, `SufficientStats.state_dict()` (copies). The
        settings (global_mean, rtol, side, missing, devices) are the constructor's and are not part of the state.

        >>> import io
        >>> acc = NCAccumulator(2, dtype=torch.float64)
        >>> acc.update([[0.0], [1.0]], [0, 1])
        >>> buf = io.BytesIO(); torch.save(acc.state_dict(), buf); _ = buf.seek(0)
        >>> again = NCAccumulator(2).load_state_dict(torch.load(buf, weights_only=True))
        >>> again.num_samples, again.state_dict()["kind"]
        (2, 'features')
        """
        state: dict[str, Any] = {"version": 1, "K": self.K, "kind": "features" if self.keep_features else "statistics",
                                 "dim": self._dim,
                                 "dtype": None if self._dtype is None else str(self._dtype).removeprefix("torch.")}
        if self.keep_features:
            state["features"] = [H for H, _ in self._batches]
            state["labels"] = [y for _, y in self._batches]
        else:
            state["stats"] = None if self._stats is None else self._stats.state_dict()
        return state

    def load_state_dict(self, state: Any) -> NCAccumulator:
        """Replace what this accumulator holds with `state` (from `state_dict()`); returns self. Updates after
        the load continue exactly where the saved accumulator stopped: the same batches (or statistics) give the
        same metrics, bit for bit on the same device. ValueError naming the mismatch where `state` has another K,
        the other kind (features vs statistics: `keep_features`), a dimension its tensors do not have (or another
        than the batches this accumulator already saw), or is not a state_dict at all.

        >>> NCAccumulator(3).load_state_dict(NCAccumulator(2).state_dict())
        Traceback (most recent call last):
        ...
        ValueError: the state has K = 2 classes, this accumulator K = 3
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be the dict of NCAccumulator.state_dict(), got {type(state).__name__}")
        lacking = [k for k in ("K", "kind", "dim", "dtype") if k not in state]
        if lacking:
            raise ValueError(f"state lacks {', '.join(lacking)}: not an NCAccumulator.state_dict()")
        if state["K"] != self.K:
            raise ValueError(f"the state has K = {state['K']} classes, this accumulator K = {self.K}")
        mine = "features" if self.keep_features else "statistics"
        if state["kind"] != mine:
            raise ValueError(f"the state holds {state['kind']} (keep_features={state['kind'] == 'features'}), this "
                             f"accumulator keeps {mine} (keep_features={self.keep_features})")
        dim = state["dim"]
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 0):
            raise ValueError(f"state['dim'] must be a non-negative int or None, got {dim!r}")
        if self._dim is not None and dim is not None and self.num_samples and dim != self._dim:
            raise ValueError(f"the state has feature dimension {dim}, this accumulator's batches have {self._dim}")
        dtype = state["dtype"]
        if dtype is not None and not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise ValueError(f"state['dtype'] must name a torch dtype such as 'float32', got {dtype!r}")
        stored = self.dtype if self.dtype is not None else None if dtype is None else getattr(torch, dtype)
        batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        stats = None
        if self.keep_features:
            features, labels = state.get("features"), state.get("labels")
            if not isinstance(features, list) or not isinstance(labels, list) or len(features) != len(labels):
                raise ValueError("state['features'] and state['labels'] must be lists of tensors of equal length")
            for i, (H, y) in enumerate(zip(features, labels, strict=True)):
                if not isinstance(H, torch.Tensor) or H.dim() != 2 or H.shape[1] != dim:
                    raise ValueError(f"state['features'][{i}] must be a tensor of shape (n, dim) with dim = {dim}, "
                                     f"got {tuple(H.shape) if isinstance(H, torch.Tensor) else type(H).__name__}")
                if not isinstance(y, torch.Tensor) or tuple(y.shape) != (H.shape[0],):
                    raise ValueError(f"state['labels'][{i}] must be a tensor of shape ({H.shape[0]},)")
                store = self.store_device if self.store_device is not None else H.device
                batches.append((H.to(device=store, dtype=stored), y.to(store)))
        elif state.get("stats") is not None:
            saved = state["stats"]
            if not isinstance(saved, dict) or saved.get("d") != dim:
                raise ValueError(f"state['stats'] must be SufficientStats.state_dict() of dimension dim = {dim}")
            kept = saved.get("dtype")
            if not isinstance(getattr(torch, str(kept), None), torch.dtype):
                raise ValueError(f"state['stats']['dtype'] must name a torch dtype, got {kept!r}")
            store = self.store_device if self.store_device is not None else saved["scatter"].device
            stats = SufficientStats(self.K, dim, dtype=getattr(torch, kept), device=store).load_state_dict(saved)
        self.reset()
        self._batches, self._stats, self._dim, self._dtype = batches, stats, dim, stored
        if self._compute_device is None:
            held = batches[0][0].device if batches else stats.device if stats is not None else None
            self._compute_device = held
        return self

    def compute(
        self,
        W: Any = None,
        b: Any = None,
        *,
        distributed: bool = False,
        group: Any = None,
        reduce: Reduce | None = None,
        pairwise: bool = True,
    ) -> dict[str, float]:
        """The NC metrics of all the samples seen: `nc_metrics(cat(features), cat(labels), W, b, K=K)`.

        W (K, d) and b (K,) are the last layer's weight and bias (logits = h Wᵀ + b); without W the keys that
        need it are NaN. `distributed=True` sums both passes' statistics over the torch.distributed process
        `group` (default: the world), so every process gets the metrics of the union of the shards; all
        processes of the group must call it, with the same W and b. `reduce` is any other sum over shards
        (a function of a tensor, as in `nc_metrics_streaming`). A process with no data of its own takes
        part in the reductions with an empty shard. `pairwise=False` skips the statistics over the K(K−1)/2
        pairs (equiangularity, max-angle, distance variances, CDNV), the O(K²·d) part at K = 10⁴–10⁵.

        >>> acc = NCAccumulator(2, dtype=torch.float64)
        >>> acc.update([[0.0, 0.0], [0.2, 0.0], [2.0, 0.0], [2.2, 0.0]], [0, 0, 1, 1])
        >>> out = acc.compute(W=[[-1.0, 0.0], [1.0, 0.0]], b=[1.1, -1.1])
        >>> round(out["nc1"], 12), out["accuracy"], out["nc4"]   # tr(Σ_W Σ_B^†)/K = (0.01 / 1) / 2
        (0.005, 1.0, 0.0)
        >>> # a reduce doubling every statistic = two identical shards: the metrics do not change
        >>> acc.compute(reduce=lambda t: 2 * t)["nc1"] == acc.compute()["nc1"]
        True
        """
        if distributed:
            if reduce is not None:
                raise ValueError("pass either distributed=True or reduce=, not both")
            reduce = distributed_sum(group)
        has_data = self.num_samples > 0
        if reduce is not None:
            dim, dtype = self._agree(reduce, W, b)
        elif not has_data:
            raise ValueError("no data: call update(features, labels) before compute()")
        else:
            dim, dtype = self._dim, self._dtype
        device = self._compute_device if self._compute_device is not None else torch.device("cpu")
        for name, t in (("W", W), ("b", b)):
            if t is not None:
                _check_finite(name, as_tensor(t, name=name))
        dtype = _compute_dtype(device)  # float64 sums whatever the storage dtype
        options = dict(global_mean=self.global_mean, rtol=self.rtol, side=self.side, missing=self.missing,
                       reduce=reduce, pairwise=pairwise)
        if not self.keep_features:
            stats = self._stats if self._stats is not None else SufficientStats(self.K, dim, dtype=dtype)
            return stats.metrics(W, b, **options)
        stored = self._batches or [(torch.empty(0, dim, dtype=dtype), torch.empty(0, dtype=torch.long))]

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for H, y in stored:
                yield H.to(device=device, dtype=dtype), y.to(device)

        return nc_metrics_streaming(batches, self.K, W, b, **options)

    def _agree(self, reduce: Reduce, W: Any, b: Any) -> tuple[int, torch.dtype]:
        """One small reduction before the metrics' own: the number of processes, K, d, the working precision
        and whether W and b are given must agree on every process holding data. Every process sees the same
        sums, so every process raises the same error (none is left waiting in a collective)."""
        has = 1.0 if self.num_samples > 0 else 0.0
        d = float(self._dim or 0) * has
        prec = (64.0 if self._dtype == torch.float64 else 32.0) * has  # nc_metrics' working precision
        w = 0.0 if W is None else 1.0
        bb = 0.0 if b is None else 1.0
        w_sum = 0.0 if W is None else float(as_tensor(W).double().sum())
        values = [1.0, has, float(self.K), float(self.K) ** 2, d, d * d, prec, prec * prec, w, bb, w_sum]
        device = self._compute_device if self._compute_device is not None else torch.device("cpu")
        s = reduce(torch.tensor(values, dtype=torch.float64, device=device)).cpu().tolist()
        P, n = s[0], s[1]
        if not (P >= 1 and 0 <= n <= P):
            raise ValueError(f"reduce must sum over processes; got {P} processes and {n} with data")
        if n == 0:
            raise ValueError("no data on any process: call update(features, labels) before compute()")

        def same(total: float, total_sq: float, count: float) -> bool:  # every term equal ⇔ zero variance
            return abs(total_sq * count - total * total) <= 1e-9 * max(total * total, 1.0)

        if not same(s[2], s[3], P):
            raise ValueError("the processes disagree on K")
        if not same(s[4], s[5], n):
            raise ValueError("the processes disagree on the feature dimension d")
        if not same(s[6], s[7], n):
            raise ValueError("the processes disagree on the precision (float64 on some, not on others)")
        if s[8] not in (0.0, P) or s[9] not in (0.0, P):
            raise ValueError("W and b must be given on every process or on none")
        if not math.isclose(s[10], P * w_sum, rel_tol=1e-6, abs_tol=1e-9 * (1 + abs(P * w_sum))):
            raise ValueError("W differs between the processes; pass the same classifier everywhere")
        dim = round(s[4] / n)
        dtype = self._dtype if has else (torch.float64 if s[6] / n == 64.0 else torch.float32)
        return dim, dtype


class FeatureHook:
    """Records the input (default) or the output of one layer on every forward pass of a model.

    `FeatureHook(model, "fc")` hooks `model.fc` (a dotted name inside `model`, or the submodule itself;
    `FeatureHook(module)` hooks `module`). The input of the classifier layer is the penultimate feature
    matrix H (n, d) of the batch. After each forward, `.features` holds that batch, detached (no graph), on
    its device; it is overwritten by the next forward (if the layer runs several times in one forward, the
    last call wins). `argmax=True` also keeps `.predictions`, the argmax of the layer's output (for a classifier
    layer: its decisions). Labels are not visible to a hook: feed an accumulator yourself,
    `acc.update(hook.features, y)`, or use `NCTracker`. Use it as a context manager, or call `remove()`.

    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> x = torch.randn(5, 4)
    >>> with FeatureHook(model, "2") as hook:
    ...     logits = model(x)
    >>> torch.equal(hook.features, model[1](model[0](x)))
    True
    >>> len(model[2]._forward_hooks)   # removed on exit
    0
    """

    def __init__(self, model: nn.Module, layer: str | nn.Module | None = None, *, input: bool = True,
                 argmax: bool = False) -> None:
        self.module = _resolve_layer(model, layer)
        self.input = input
        self.argmax = argmax
        self.features: torch.Tensor | None = None
        self.predictions: torch.Tensor | None = None
        self.calls = 0
        self._handle: Any = self.module.register_forward_hook(self._record, with_kwargs=True)

    def _record(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.input:
            x = args[0] if args else next(iter(kwargs.values()), None)
        else:
            x = output
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"the hooked layer's {'input' if self.input else 'output'} is not a tensor "
                            f"({type(x).__name__})")
        self.features = x.detach()
        if self.argmax and isinstance(output, torch.Tensor):
            # the layer's own decisions (its output's argmax: a classifier's predicted classes), not its output,
            # which for 10⁴–10⁵ classes is the largest tensor of the forward pass
            self.predictions = output.detach().argmax(-1)
        self.calls += 1

    def remove(self) -> None:
        """Remove the hook from the layer (idempotent); `.features` keeps the last batch.

        >>> from torch import nn
        >>> layer = nn.Linear(2, 2)
        >>> hook = FeatureHook(layer)
        >>> hook.remove(); len(layer._forward_hooks)
        0
        """
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> FeatureHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if layer is None:
        return model
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("the layer is not a submodule of the model")
        return layer
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n]
            raise ValueError(f"model has no submodule {layer!r}; its submodules are {names}") from None
    raise TypeError(f"layer must be a module, a dotted name or None, got {type(layer).__name__}")


class NCTracker:
    """NC metrics of a network's penultimate features: a `FeatureHook` on the classifier layer feeding an
    `NCAccumulator`.

    `NCTracker(model, "fc")` hooks the input of `model.fc`. `update(x, y)` runs `model(x)` without gradients
    (in eval mode by default; every module's train/eval flag is restored afterwards), adds the captured
    features with labels y and returns the model's output. `compute()` returns the dict of
    `analysis.metrics.nc_metrics` (Papyan, Han & Donoho 2020) on all the features seen, with W and b read
    from the layer when it is an `nn.Linear` (pass W, b to override). K defaults to the Linear's
    out_features. Other keyword arguments go to `NCAccumulator` (global_mean, rtol, device, store_device, dtype,
    keep_features, side, missing; with keep_features=False the accuracy is that of the layer's own decisions at each
    update, read off its output by the hook). `layers=` (module names, modules or "all", analysis.layers) also
    follows those layers' outputs in the same forward passes, pooled by `pool` ("avg", "flatten" or a function), into
    one-pass statistics per layer: `compute_layers()`. `compute(distributed=True)` is the DDP path (track the unwrapped
    `ddp_model.module`: a forward of the DDP wrapper may itself communicate). Remove the hook with `remove()` or a
    `with` block.

    >>> import torch
    >>> from torch import nn
    >>> from analysis.metrics import nc_metrics
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    >>> x, y = torch.randn(40, 4, dtype=torch.float64), torch.arange(40) % 3
    >>> with NCTracker(model, "2") as tracker:
    ...     for i in range(0, 40, 16):
    ...         logits = tracker.update(x[i:i + 16], y[i:i + 16])
    ...     out = tracker.compute()
    >>> H = model[1](model[0](x)).detach()
    >>> ref = nc_metrics(H, y, model[2].weight, model[2].bias, K=3)
    >>> max(abs(out[k] - ref[k]) for k in ("nc1", "nc2", "nc3", "nc4")) < 1e-10
    True
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module | None,
        K: int | None = None,
        *,
        eval_mode: bool = True,
        layers: Any = None,
        pool: Any = "avg",
        **accumulator_options: Any,
    ) -> None:
        module = _resolve_layer(model, layer)
        if not isinstance(eval_mode, bool):
            raise TypeError(f"eval_mode must be True or False, got {eval_mode!r}")
        if K is None:
            if not isinstance(module, nn.Linear):
                raise ValueError("K is needed when the layer is not an nn.Linear")
            K = module.out_features
        self.accumulator = NCAccumulator(K, **accumulator_options)
        self.model = model
        self.layer = module
        self.eval_mode = eval_mode
        # without the features, the accuracy needs the classifier's decisions at update time: the layer's argmax
        self.hook = FeatureHook(model, module, input=True,
                                argmax=not self.accumulator.keep_features and isinstance(module, nn.Linear))
        # every layer in the same forward: one-pass statistics per layer (analysis.layers)
        self.layer_hooks = LayerHooks(model, layers, pool) if layers is not None else None
        if self.layer_hooks is not None:
            self.layer_hooks.active = False  # the user's own forwards (training steps) are not recorded
        self.layer_stats: dict[str, SufficientStats] = {}

    @property
    def K(self) -> int:
        """The number of classes (the Linear's out_features unless given).

        >>> from torch import nn
        >>> NCTracker(nn.Linear(3, 4), None).K
        4
        """
        return self.accumulator.K

    def update(self, x: Any, y: Any) -> Any:
        """Run the model on the batch x (no gradients), add its penultimate features with labels y, and return
        the model's output.

        >>> from torch import nn
        >>> tracker = NCTracker(nn.Sequential(nn.Linear(3, 2)), "0")
        >>> tracker.update(torch.randn(4, 3), [0, 1, 0, 1]).shape
        torch.Size([4, 2])
        """
        modes = [(m, m.training) for m in self.model.modules()]
        self.hook.features = self.hook.predictions = None
        if self.layer_hooks is not None:
            self.layer_hooks.clear()
            self.layer_hooks.active = True
        try:
            if self.eval_mode:
                self.model.eval()
            with torch.no_grad():
                output = self.model(x)
        finally:
            if self.layer_hooks is not None:
                self.layer_hooks.active = False
            for m, training in modes:
                m.training = training
        if self.hook.features is None:
            raise RuntimeError("the tracked layer did not run during the model's forward pass")
        self.accumulator.update(self.hook.features, y, self.hook.predictions)
        if self.layer_hooks is not None:
            self._update_layers(y)
        return output

    def _update_layers(self, y: Any) -> None:
        labels = as_labels(y)
        for name, H in self.layer_hooks.features.items():
            stats = self.layer_stats.get(name)
            if stats is None:
                check_layer_fits(name, H.shape[1])
                store = self.accumulator.store_device if self.accumulator.store_device is not None else H.device
                stats = self.layer_stats[name] = SufficientStats(self.K, H.shape[1], dtype=_compute_dtype(store),
                                                                 device=store)
            _check_finite(f"the features of layer {name!r}", H)
            stats.add(H.to(_compute_dtype(stats.device)), labels.to(H.device))
        missing = set(self.layer_hooks.modules) - set(self.layer_hooks.features)
        if missing:
            raise RuntimeError(f"the tracked layers {sorted(missing)} did not run during the model's forward pass")

    def compute_layers(self, *, distributed: bool = False, group: Any = None,
                       reduce: Reduce | None = None) -> dict[str, dict[str, Any]]:
        """Per tracked layer (`layers=` at construction), in forward order: NC1, NC1 as the trace ratio, the
        separation fuzziness D_l = tr(Σ_W Σ_B⁺) (He & Su 2023), NC2 of the means, their rank and singular values
        (analysis.layers.layer_metrics), from one pass over the data; ncc_accuracy is NaN here (it compares each
        sample with the final means: analysis.layers.measure_layers does two passes). `distributed=True` sums the
        statistics over the process group, as `compute` does.

        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> tracker = NCTracker(net, "4", layers="all")
        >>> _ = tracker.update(torch.randn(30, 4), torch.arange(30) % 3)
        >>> sorted(tracker.compute_layers()), sorted(tracker.compute_layers()["1"])[:4]
        (['1', '3'], ['cdnv', 'dim', 'nc1', 'nc1_trace'])
        """
        if self.layer_hooks is None:
            raise ValueError("no layers are tracked: pass layers=[names] or layers='all' to NCTracker")
        if distributed:
            if reduce is not None:
                raise ValueError("pass either distributed=True or reduce=, not both")
            reduce = distributed_sum(group)
        if not self.layer_stats and reduce is None:
            raise ValueError("no data: call update(x, y) before compute_layers()")
        return {name: stats_layer_metrics(self.layer_stats[name], rtol=self.accumulator.rtol,
                                          missing=self.accumulator.missing, reduce=reduce)
                for name in self.layer_hooks.modules if name in self.layer_stats}

    def compute(
        self,
        W: Any = None,
        b: Any = None,
        *,
        distributed: bool = False,
        group: Any = None,
        reduce: Reduce | None = None,
        pairwise: bool = True,
    ) -> dict[str, float]:
        """`NCAccumulator.compute` with W and b taken from the layer when it is an `nn.Linear` and W is None.

        >>> from torch import nn
        >>> tracker = NCTracker(nn.Sequential(nn.Linear(3, 2)), "0")
        >>> _ = tracker.update(torch.randn(6, 3), [0, 1, 0, 1, 0, 1])
        >>> 0.0 <= tracker.compute()["nc4"] <= 1.0
        True
        """
        if W is None and isinstance(self.layer, nn.Linear):
            W = self.layer.weight.detach()
            if b is None and self.layer.bias is not None:
                b = self.layer.bias.detach()
        return self.accumulator.compute(W, b, distributed=distributed, group=group, reduce=reduce, pairwise=pairwise)

    def reset(self) -> None:
        """Forget the features seen (the hook stays).

        >>> from torch import nn
        >>> tracker = NCTracker(nn.Linear(3, 2), None)
        >>> _ = tracker.update(torch.randn(2, 3), [0, 1]); tracker.reset(); tracker.accumulator.num_samples
        0
        """
        self.accumulator.reset()
        self.layer_stats = {}

    def remove(self) -> None:
        """Remove the hook (the features seen stay in the accumulator).

        >>> from torch import nn
        >>> model = nn.Linear(3, 2)
        >>> NCTracker(model, None).remove(); len(model._forward_hooks)
        0
        """
        self.hook.remove()
        if self.layer_hooks is not None:
            self.layer_hooks.remove()

    def __enter__(self) -> NCTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
