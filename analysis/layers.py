"""Neural collapse at every layer: the features after several modules of a network, measured in one pass.

Intermediate neural collapse (Rangamani et al., ICML 2023) and deep neural collapse (Súkeník et al.) follow NC1 and
the geometry of the class means through the layers; the law of data separation (He & Su, PNAS 2023) says that the
separation fuzziness D_l = tr(Σ_W^l (Σ_B^l)⁺) decays geometrically with depth l, log D_l ≈ a − ρ·l.

- `LayerHooks(model, layers, pool)`: forward hooks on several modules, each output pooled to (N, d) — a
  convolution's (N, C, H, W) by global average (default), by flattening, or by a callable of yours.
- `layer_metrics(stats)`: one layer's numbers from its sufficient statistics (`analysis.metrics.SufficientStats`).
- `measure_layers(model, batches, layers, K)`: every layer of a model over data that can be iterated twice, exactly
  (two passes: nearest-class-center accuracy included).
- `separation_law(D)`: the fit of log D_l = a − ρ·l.

`NCTracker(model, "fc", layers=[...])` (analysis.tracking) uses these for its one-pass per-layer metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from analysis.blocked import memory_budget
from analysis.metrics import (
    DEFAULT_RTOL,
    SufficientStats,
    _finalize,
    _geometry,
    class_sums,
    deviation_stats,
    map_fields,
)

POOLS = ("avg", "flatten")
# "all": the output of every leaf activation module — the representations between layers. A model whose
# activations are functional (torch.nn.functional.relu inside forward) has none: then every leaf Linear and
# convolution is tracked instead.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.Hardswish)
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# the keys of one layer's metrics (besides singular_values, a list)
LAYER_KEYS = ("nc1", "nc1_trace", "separation", "nc2", "ncc_accuracy", "rank_means", "orthogonality", "tr_sigma_W",
              "tr_sigma_B", "cdnv", "samples", "dim")

Pool = str | Callable[[torch.Tensor], torch.Tensor]


def pool_features(x: torch.Tensor, pool: Pool = "avg") -> torch.Tensor:
    """A module's output as features (N, d): (N, d) as it is; (N, C, *spatial) by global average over the spatial
    axes ("avg", the default: one number per channel, as a CNN's own head pools), or all of it ("flatten":
    C·H·W numbers per sample); a callable gets the output and returns (N, d).
    >>> pool_features(torch.ones(2, 3, 4, 4)).shape, pool_features(torch.ones(2, 3, 4, 4), "flatten").shape
    (torch.Size([2, 3]), torch.Size([2, 48]))
    """
    if callable(pool):
        out = pool(x)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"pool must return the features (N, d) = ({x.shape[0]}, d), got {shape}")
        return out
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS} or a function, got {pool!r}")
    if x.dim() < 2:
        raise ValueError(f"a tracked layer's output must have a batch axis and features, got shape {tuple(x.shape)}")
    if x.dim() == 2:
        return x
    return x.flatten(1) if pool == "flatten" else x.flatten(2).mean(2)


def select_layers(model: nn.Module, layers: str | nn.Module | Sequence[str | nn.Module]) -> dict[str, nn.Module]:
    """The modules to track, by name in the model: a dotted name, a module, a list of them, or "all" (every leaf
    activation module; where the model has none, every leaf Linear and convolution — module docstring).
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> list(select_layers(net, "all")), list(select_layers(net, ["0", net[3]]))
    (['1', '3'], ['0', '3'])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = {id(m): n for n, m in model.named_modules()}
    if isinstance(layers, str) and layers == "all":
        leaves = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
        chosen = [(n, m) for n, m in leaves if isinstance(m, ACTIVATIONS)]
        if not chosen:
            chosen = [(n, m) for n, m in leaves if isinstance(m, WEIGHTED)]
        if not chosen:
            raise ValueError("layers='all' found no activation, Linear or convolution module in the model: name the "
                             "modules to track")
        return dict(chosen)
    items = [layers] if isinstance(layers, (str, nn.Module)) else layers
    if not isinstance(items, Sequence) or not items:
        raise TypeError(f"layers must be 'all', a module name, a module or a non-empty list of them, got {layers!r}")
    out: dict[str, nn.Module] = {}
    for item in items:
        if isinstance(item, nn.Module):
            if id(item) not in names:
                raise ValueError(f"layers: the module {type(item).__name__} is not a submodule of the model")
            out[names[id(item)] or "(model)"] = item
        elif isinstance(item, str):
            try:
                out[item] = model.get_submodule(item)
            except AttributeError:
                known = [n for n, _ in model.named_modules() if n]
                raise ValueError(f"layers: the model has no submodule {item!r}; its submodules are {known}") from None
        else:
            raise TypeError(f"layers must hold module names or modules, got {type(item).__name__}")
    return out


class LayerHooks:
    """Forward hooks on several modules: after each forward, `features[name]` holds that module's output pooled to
    (N, d) (`pool_features`), detached. A module that runs twice in one forward (a shared activation) is an error
    naming it: track the block around it instead. While `active` is False, forwards are not recorded. Use as a
    context manager, or call `remove()`.
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> with LayerHooks(net, "all") as hooks:
    ...     _ = net(torch.randn(5, 4))
    >>> {k: tuple(v.shape) for k, v in hooks.features.items()}
    {'1': (5, 8)}
    """

    def __init__(self, model: nn.Module, layers: Any = "all", pool: Pool = "avg") -> None:
        if not callable(pool) and pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS} or a function, got {pool!r}")
        self.modules = select_layers(model, layers)
        self.pool = pool
        self.features: dict[str, torch.Tensor] = {}
        self.active = True  # False: forwards pass unrecorded (NCTracker records only inside its update)
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules.items()]

    def _hook(self, name: str) -> Callable:
        def record(module: nn.Module, args: tuple, output: Any) -> None:
            if not self.active:
                return
            if name in self.features:
                raise RuntimeError(f"the tracked module {name!r} ran twice in one forward pass (a shared module): "
                                   "track the block that contains it instead")
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"the output of the tracked module {name!r} is not a tensor ({type(output).__name__})")
            self.features[name] = pool_features(output.detach(), self.pool)
        return record

    def clear(self) -> None:
        """Forget the last forward's features (call before each forward)."""
        self.features = {}

    def remove(self) -> None:
        """Remove every hook (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> LayerHooks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def check_layer_fits(name: str, d: int) -> None:
    """The one-pass statistics of a layer hold a d×d float64 scatter: refused beyond the memory budget (a flattened
    convolution's C·H·W can be 10⁵), naming the layer and the cost.
    >>> check_layer_fits("conv1", 512)
    """
    need = 8 * d * d
    if need > memory_budget():
        raise ValueError(f"layer {name!r} has {d} features per sample: its d×d statistics take {need / 2**30:.3g} GiB, "
                         f"over the memory budget of {memory_budget() / 2**30:.3g} GiB (analysis.blocked): pool it "
                         "(pool='avg') or raise the budget")


def _singular_values(sums_means: torch.Tensor) -> list[float]:
    return torch.linalg.svdvals(sums_means).tolist()


def layer_metrics(metrics: dict[str, float], means: torch.Tensor, K: int) -> dict[str, Any]:
    """One layer's numbers from the dict of `nc_metrics` on its features and its class means (K, d):
    nc1 = tr(Σ_W Σ_B⁺)/K (Papyan et al. 2020), nc1_trace = tr Σ_W / tr Σ_B, separation = D_l = tr(Σ_W Σ_B⁺) = K·nc1
    (He & Su 2023's separation fuzziness, Σ_W over the N samples, Σ_B over the K classes), nc2 of the means,
    ncc_accuracy (NaN from one pass), rank_means, the singular values of the centered means and the orthogonality
    of the uncentered means (`mean_orthogonality`).
    >>> M = torch.eye(3, 4, dtype=torch.float64)
    >>> out = layer_metrics({"nc1": 0.1, "tr_sigma_W": 0.2, "tr_sigma_B": 0.5, "nc2": 0.0, "rank_means": 2.0}, M, 3)
    >>> round(out["separation"], 12), round(out["nc1_trace"], 12), len(out["singular_values"])
    (0.3, 0.4, 3)
    """
    centered = means - means.mean(0, keepdim=True)
    out: dict[str, Any] = {k: float(metrics.get(k, math.nan)) for k in LAYER_KEYS if k in metrics}
    out["separation"] = K * float(metrics["nc1"])
    if "nc1_trace" not in metrics:  # (nc_metrics' own dict has it)
        tr_b = float(metrics.get("tr_sigma_B", math.nan))
        out["nc1_trace"] = float(metrics.get("tr_sigma_W", math.nan)) / tr_b if tr_b > 0 else math.nan
    out["singular_values"] = _singular_values(centered.double())
    out["orthogonality"] = mean_orthogonality(means)
    return out


def mean_orthogonality(means: torch.Tensor) -> float:
    """max_{k≠k'} |cos(μ_k, μ_k')| of the uncentered class means: 0 when they are orthogonal, as deep neural collapse
    predicts after a ReLU layer (Súkeník, Mondelli & Lampert 2023). Over the nonzero means (a class whose mean is 0
    — dead after a ReLU — has no direction); NaN when fewer than two are nonzero.
    >>> mean_orthogonality(torch.eye(3, 4)), round(mean_orthogonality(torch.tensor([[1.0, 0.0], [1.0, 1.0]])), 6)
    (0.0, 0.707107)
    """
    M = means.double()
    norms = M.norm(dim=1)
    M, norms = M[norms > 0], norms[norms > 0]
    if len(M) < 2:
        return math.nan
    C = (M / norms[:, None]) @ (M / norms[:, None]).T
    C.fill_diagonal_(0)
    return float(C.abs().max())


def stats_layer_metrics(stats: SufficientStats, *, rtol: float = DEFAULT_RTOL, missing: str = "error",
                        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """`layer_metrics` of one layer from its one-pass sufficient statistics (ncc_accuracy NaN: it compares each
    sample with the final means); `reduce` sums over the shards of a data-parallel run.
    >>> st = SufficientStats(2, 1)
    >>> st.add(torch.tensor([[0.0], [0.2], [2.0], [2.2]], dtype=torch.float64), torch.tensor([0, 0, 1, 1]))
    >>> round(stats_layer_metrics(st)["nc1"], 12)
    0.005
    """
    m = stats.metrics(rtol=rtol, missing=missing, pairwise=False, reduce=reduce)
    sums = stats.class_sums() if reduce is None else map_fields(reduce, stats.class_sums())
    present = sums.counts > 0
    out = layer_metrics(m, (sums.sums[present] / sums.counts[present, None].double()).cpu(), stats.K)
    out["samples"], out["dim"] = int(sums.counts.sum()), stats.d
    return out


def measure_layers(model: nn.Module, batches: Iterable[tuple[Any, Any]] | Callable[[], Iterable], K: int,
                   layers: Any = "all", *, pool: Pool = "avg", rtol: float = DEFAULT_RTOL, missing: str = "error",
                   eval_mode: bool = True,
                   reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, dict[str, Any]]:
    """Every tracked layer's `layer_metrics`, exactly — nearest-class-center accuracy included — over data that can
    be iterated twice (a list, a DataLoader, or a function returning a fresh iterable of (x, y) batches): each
    batch's forward pass feeds all the layers at once, so two passes over the data cost two forward passes whatever
    the number of layers. The features of a layer are held one batch at a time (memory O(K·d + min(K, d)²) per
    layer). The model runs without gradients, in eval mode by default (its modes are restored). `reduce` sums each
    pass's statistics over the shards of a data-parallel run (an all-reduce), as in `nc_metrics_streaming`.
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    >>> data = [(torch.randn(20, 4, dtype=torch.float64), torch.arange(20) % 3) for _ in range(2)]
    >>> out = measure_layers(net, data, 3)
    >>> list(out), 0.0 <= out["1"]["ncc_accuracy"] <= 1.0
    (['1'], True)
    """
    if not callable(batches) and iter(batches) is batches:
        raise ValueError("batches is a one-shot iterator: pass a list, a DataLoader, or a function returning a fresh "
                         "iterable (two passes are needed)")
    fresh = batches if callable(batches) else (lambda: batches)
    modes = [(m, m.training) for m in model.modules()]
    try:
        if eval_mode:
            model.eval()
        with LayerHooks(model, layers, pool) as hooks, torch.no_grad():
            return _two_passes(model, fresh, hooks, list(hooks.modules), K, rtol, missing, reduce)
    finally:
        for m, training in modes:
            m.training = training


def _two_passes(model: nn.Module, fresh: Callable[[], Iterable], hooks: LayerHooks, names: list[str], K: int,
                rtol: float, missing: str, reduce: Callable[[torch.Tensor], torch.Tensor] | None
                ) -> dict[str, dict[str, Any]]:
    """Pass 1: every layer's class sums; pass 2: every layer's deviations from its means and nearest-mean decisions
    (analysis.metrics' two-pass pieces, fed by one forward per batch)."""
    sums: dict[str, Any] = {}
    for x, y in fresh():
        hooks.clear()
        model(x)
        for n in names:
            H = hooks.features[n].double()
            s = class_sums(H, torch.as_tensor(y, device=H.device), K)
            sums[n] = s if n not in sums else sums[n] + s
    if not sums and reduce is None:
        raise ValueError("no batches")
    if reduce is not None:
        sums = {n: map_fields(reduce, sums[n]) for n in names}
    geoms = {n: _geometry(sums[n], None, None, "samples", torch.float64, side="auto", missing=missing)
             for n in names}
    devs: dict[str, Any] = {}
    for x, y in fresh():
        hooks.clear()
        model(x)
        for n in names:
            H = hooks.features[n].double().to(geoms[n].means.device)
            s = deviation_stats(H, torch.as_tensor(y, device=H.device), geoms[n])
            devs[n] = s if n not in devs else devs[n] + s
    if reduce is not None:
        devs = {n: map_fields(reduce, devs[n]) for n in names}
    out = {}
    for n in names:
        m = _finalize(sums[n], geoms[n], devs[n], rtol, pairwise=False)
        present = sums[n].counts > 0
        means = (sums[n].sums[present] / sums[n].counts[present, None].double()).cpu()
        out[n] = layer_metrics(m, means, K)
        out[n]["samples"], out[n]["dim"] = int(sums[n].counts.sum()), int(means.shape[1])
    return out


@dataclass(frozen=True)
class SeparationLaw:
    """The fit log D_l = a − ρ·l (He & Su 2023): ρ the decay per layer (D shrinks by e^ρ from one layer to the
    next), a the intercept, r2 the coefficient of determination of the fit in log space."""

    rho: float
    a: float
    r2: float

    @property
    def ratio(self) -> float:
        """D_{l+1} / D_l = e^{−ρ}."""
        return math.exp(-self.rho)


def separation_law(D: Sequence[float], depths: Sequence[float] | None = None) -> SeparationLaw:
    """Least-squares fit of log D_l = a − ρ·l over the layers (depths l = 1, 2, … unless given), the law of data
    separation of He & Su (PNAS 2023): returns ρ, a and R² (of the fit to log D).
    >>> law = separation_law([8.0, 4.0, 2.0, 1.0])
    >>> round(law.rho, 12) == round(math.log(2), 12), round(law.r2, 12)
    (True, 1.0)
    """
    d = np.asarray([float(v) for v in D], dtype=np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"D must hold at least 2 layers' separation fuzziness, got {len(d)}")
    if not np.all(np.isfinite(d)) or np.any(d <= 0):
        raise ValueError(f"D must be finite and > 0 (its logarithm is fitted), got {d.tolist()}")
    l = np.arange(1, len(d) + 1, dtype=np.float64) if depths is None else np.asarray(depths, dtype=np.float64)
    if l.shape != d.shape:
        raise ValueError(f"depths must have one value per layer ({len(d)}), got {len(l)}")
    if np.ptp(l) == 0:
        raise ValueError("depths must not all be equal")
    y = np.log(d)
    lc = l - l.mean()
    slope = float((lc * (y - y.mean())).sum() / (lc * lc).sum())
    a = float(y.mean() - slope * l.mean())
    resid = y - (a + slope * l)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / total if total > 0 else 1.0
    return SeparationLaw(rho=-slope, a=a, r2=r2)
