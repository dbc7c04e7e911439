"""The NC metrics as a torchmetrics `Metric` (optional: needs torchmetrics, `pip install 'ufm[torchmetrics]'`), for
training code that already collects its metrics with torchmetrics or PyTorch Lightning.

`NCMetric(K, d)`: `update(features, labels)` per batch, `compute(W, b)` → the dict of
`analysis.metrics.nc_metrics` (Papyan, Han & Donoho 2020; DESIGN §5.1) computed from one-pass sufficient
statistics, exactly as `NCAccumulator(K, keep_features=False).compute(W, b)`: every key of `nc_metrics`, with nc4
and ncc_accuracy NaN (they compare each sample with the final means, which one pass cannot), and the accuracy that
of the `predictions` passed to `update` (NaN without them). `reset()` forgets the batches.

Distributed (DDP, Lightning): the state is sums only — counts n_k, shifted class sums Σ(h_i − c_k), shifted
sums of squares and the d×d scatter Σ(h_i − c_{y_i})(h_i − c_{y_i})ᵀ, all float64, registered with
`dist_reduce_fx="sum"` — so torchmetrics' own synchronization (`compute` after `update` on every process,
`merge_state`, `sync`) gives the statistics, and so the metrics, of the union of the shards. Sums of shards add
only where every shard uses the same shifts c_k: unlike `SufficientStats`, which shifts each class by its first
sample, the shifts here are fixed when the metric is made (`shift`, default zero) and must be the same on every
process.

The precision trade-off of the default zero shift: the within-class scatter is then a difference of raw second
moments, Σ h hᵀ − n μμᵀ, which loses about log10(‖μ_k − c_k‖² / σ_k²) of float64's 16 digits (σ_k² the mean
squared distance of class k's samples to their mean). Measured (K = 4, d = 6, ‖μ_k‖ = 1, float64; the test
tests/analysis/test_torchmetrics_adapter.py checks it): a spread σ = 1e-3 gives NC1 to 5e-10 relative, σ = 1e-6 to
2e-4, while with `shift` = the class means it stays at 1e-15 as NCAccumulator's does. Deep into collapse pass
`shift`, any (K, d) estimate of the class means that every process agrees on (the class means of the previous
epoch, say): then only the distance of the true means from it counts. `NCAccumulator(keep_features=False)` needs
no such choice (its shards are combined by moving each one's shifts, as `SufficientStats.merge` does), at the
price of doing its own all_reduce (`compute(distributed=True)`).

Memory: about K·d + d² float64 numbers per process, whatever the number of samples; the d×d scatter is reduced
across processes at every `compute`.

Do not name a module of your own `torchmetrics.py` beside this one: it would hide the package.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from analysis._arrays import as_features, as_labels, as_tensor
from analysis.metrics import DEFAULT_RTOL, SufficientStats, check_options

try:
    from torchmetrics import Metric
except ImportError as e:  # the module is optional: say how to get it
    raise ImportError(f"analysis.torchmetrics_adapter needs the torchmetrics package ({e}): "
                      "pip install 'ufm[torchmetrics]'") from e

__all__ = ["NCMetric"]

_F64 = torch.float64


def _classifier(name: str, value: Any, shape: tuple[int, ...]) -> torch.Tensor | None:
    if value is None:
        return None
    t = as_tensor(value, name=name).detach().to(_F64)
    if name == "b":
        t = t.reshape(-1)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has non-finite values (NaN or inf): the NC metrics of such numbers mean nothing")
    return t


class NCMetric(Metric):
    """Neural-collapse metrics of penultimate features as a torchmetrics `Metric` (module docstring).

    Parameters: K classes (≥ 2) and feature dimension d (≥ 1); W (K, d) and b (K,), the classifier used by
    `compute` when it is given none (logits = h Wᵀ + b); `shift` (K, d), the fixed per-class shifts of the sums
    (default zero; the same on every process: module docstring for the precision it buys); `global_mean`, `rtol`,
    `side`, `missing` and `pairwise` as in `NCAccumulator.compute` / `nc_metrics`; other keyword arguments go to
    torchmetrics' `Metric` (process_group, dist_sync_fn, sync_on_compute, …). `compute_with_cache` defaults to
    False here, since the result depends on the W and b passed to `compute`.

    `update(features, labels, predictions=None)`: features (n, d), labels (n,) in 0..K−1, optionally the
    classifier's decisions (n,) for the accuracy. `compute(W=None, b=None)`: the metrics dict (floats), with W and
    b given here, else those given at construction. Calling the metric on a batch (`forward`) returns that batch's
    metrics alone, which needs every class in the batch unless `missing="exclude"`; `update` has no such need.

    >>> import torch
    >>> from analysis.tracking import NCAccumulator
    >>> g = torch.Generator().manual_seed(0)
    >>> H = torch.randn(60, 5, generator=g, dtype=torch.float64)
    >>> y = torch.arange(60) % 3
    >>> H += 4 * torch.eye(3, 5, dtype=torch.float64)[y]
    >>> metric, acc = NCMetric(3, 5), NCAccumulator(3, keep_features=False)
    >>> for i in range(0, 60, 25):
    ...     metric.update(H[i:i + 25], y[i:i + 25]); acc.update(H[i:i + 25], y[i:i + 25])
    >>> out, ref = metric.compute(), acc.compute()
    >>> abs(out["nc1"] - ref["nc1"]) < 1e-12 * ref["nc1"], sorted(out) == sorted(ref)
    (True, True)
    >>> metric.reset(); int(metric.counts.sum())
    0
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    counts: torch.Tensor
    shifted_sums: torch.Tensor
    shifted_ss: torch.Tensor
    scatter: torch.Tensor
    predicted: torch.Tensor
    correct: torch.Tensor

    def __init__(self, K: int, d: int, W: Any = None, b: Any = None, *, shift: Any = None,
                 global_mean: str = "samples", rtol: float = DEFAULT_RTOL, side: str = "auto",
                 missing: str = "error", pairwise: bool = True, **kwargs: Any) -> None:
        check_options(K, global_mean=global_mean, rtol=rtol, side=side, missing=missing)
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"d must be an int, got {d!r} ({type(d).__name__})")
        if d < 1:
            raise ValueError(f"d must be at least 1, got {d!r}")
        if not isinstance(pairwise, bool):
            raise TypeError(f"pairwise must be True or False, got {pairwise!r}")
        kwargs.setdefault("compute_with_cache", False)
        super().__init__(**kwargs)
        self.K, self.d = int(K), int(d)
        self.global_mean, self.rtol, self.side, self.missing, self.pairwise = global_mean, rtol, side, missing, pairwise
        self.W = _classifier("W", W, (self.K, self.d))
        self.b = _classifier("b", b, (self.K,))
        fixed = _classifier("shift", shift, (self.K, self.d))
        # a buffer, not a state: never reduced, moved with .to(device), saved with the module's state_dict
        self.register_buffer("shift", torch.zeros(self.K, self.d, dtype=_F64) if fixed is None else fixed)
        self.add_state("counts", torch.zeros(self.K, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("shifted_sums", torch.zeros(self.K, self.d, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("shifted_ss", torch.zeros(self.K, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("scatter", torch.zeros(self.d, self.d, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("predicted", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def _stats(self) -> SufficientStats:
        return SufficientStats(self.K, self.d, dtype=_F64, device=self.counts.device, shift=self.shift)

    def update(self, features: Any, labels: Any, predictions: Any = None) -> None:
        """Add one batch: features (n, d), labels (n,) in 0..K−1, optionally the classifier's decisions (n,)."""
        H = as_features(features).detach()
        if H.shape[1] != self.d:
            raise ValueError(f"features have dimension {H.shape[1]}, this metric d = {self.d}")
        y = as_labels(labels, device=H.device)
        if H.shape[0] != y.shape[0]:
            raise ValueError(f"features have {H.shape[0]} rows but labels have {y.shape[0]} entries")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.K):
            raise ValueError(f"labels must lie in 0..{self.K - 1}, got range {int(y.min())}..{int(y.max())}")
        if H.is_floating_point() and not bool(torch.isfinite(H).all()):
            raise ValueError("features have non-finite values (NaN or inf): the NC metrics of such numbers mean "
                             "nothing (a diverged network?)")
        part = self._stats()
        part.add(H.to(_F64), y, predictions)
        self.counts += part.counts
        self.shifted_sums += part.shifted_sums
        self.shifted_ss += part.shifted_ss
        self.scatter += part.scatter
        self.predicted += part.predicted
        self.correct += part.correct

    def compute(self, W: Any = None, b: Any = None) -> dict[str, float]:
        """The metrics of every sample seen (on every process, once synchronized): the dict of `nc_metrics`, with
        W and b given here or at construction (the keys that need W are NaN without one)."""
        W = self.W if W is None else _classifier("W", W, (self.K, self.d))
        b = self.b if b is None else _classifier("b", b, (self.K,))
        if int(self.counts.sum()) == 0:
            raise ValueError("no data: call update(features, labels) before compute()")
        state = {name: getattr(self, name) for name in ("counts", "shifted_sums", "shifted_ss", "scatter")}
        stats = self._stats().load_state_dict({**state, "shift": self.shift, "K": self.K, "d": self.d,
                                               "fixed_shift": True, "predicted": int(self.predicted),
                                               "correct": int(self.correct)})
        return stats.metrics(W, b, global_mean=self.global_mean, rtol=self.rtol, side=self.side,
                             missing=self.missing, pairwise=self.pairwise)
