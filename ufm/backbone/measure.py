"""NC of a network: penultimate features of a whole split (training or test set), in evaluation mode and
full precision, measured with the streaming metrics (batches; in a DDP run each process passes its shard
and the additive statistics are summed over processes, so every process gets the metrics of the union)."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable

import torch

from analysis.hierarchical_metrics import mean_geometry_metrics, prediction_metrics, prediction_sums
from analysis.metrics import class_sums, map_fields, nc_metrics_streaming
from analysis.theory import etf_exists
from ufm.backbone.networks import Network
from ufm.losses import LossOptions

Reduce = Callable[[torch.Tensor], torch.Tensor] | None
# the test-set columns of history.csv (test_KEY): the NC metrics and every hierarchical prediction measure the
# papers report on held-out data (Bertinetto et al. 2020; Liang & Davis 2023)
TEST_KEYS = ("loss", "accuracy", "nc1", "nc2", "nc3", "nc4", "ncc_accuracy", "mistake_severity", "hier_dist@1",
             "hier_dist@5", "hier_dist@20", "best_hier_dist@5", "best_hier_dist@20", "hier_precision@5",
             "hier_precision@20", "angular_mean", "hier_nc2")


@torch.no_grad()
def features_of(net: Network, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device,
                on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(h, y)] over `x` in batches, on `device`, float32, evaluation mode (BatchNorm's running statistics).
    The features are kept (N·d floats) so the metrics' two passes need one forward pass; the logits are not (N×K
    for the whole split): `on_batch(h, logits, y)` reads each batch's while it exists."""
    was_training = net.training
    net.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device, non_blocking=True)
        h, z = net(xb)
        # the metrics sum in float64, which MPS lacks: there they run on the CPU
        where = torch.device("cpu") if device.type == "mps" else device
        h, yb = h.float().to(where), y[start:start + batch_size].to(where)
        if on_batch is not None:
            on_batch(h, z.float().to(where), yb)
        out.append((h, yb))
    net.train(was_training)
    return out


def _total(parts: list, reduce: Reduce):
    """The sum of additive statistics over the batches, and over the processes when `reduce` is given."""
    total = functools.reduce(operator.add, parts)
    return total if reduce is None else map_fields(reduce, total)


def _summed(values: list[float], device: torch.device, reduce: Reduce) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device if device.type != "mps" else "cpu")
    return (reduce(t) if reduce is not None else t).tolist()


def measure_split(net: Network, x: torch.Tensor, y: torch.Tensor, K: int, loss_fn: Callable, opts: LossOptions, *,
                  batch_size: int, device: torch.device, reduce: Reduce = None, normalized: bool = False,
                  lca: torch.Tensor | None = None, frame_gram: torch.Tensor | None = None) -> dict[str, float]:
    """loss (mean data loss), accuracy, NC1–NC4 and companions (analysis.metrics), H_norm_sq = Σ‖h_i‖²,
    and with a class tree mistake severity, HierDist@k, angular collapse and hierarchy-aware NC2.
    `normalized`: measure ĥ and Ŵ (HUG, whose loss sees only directions)."""
    W = net.W.detach().float()
    b = None if net.b is None else net.b.detach().float()
    W_seen = (W / W.norm(dim=1, keepdim=True)).to(device) if normalized else None
    sums = {"loss": 0.0, "h_sq": 0.0}
    predictions = []

    def on_batch(h: torch.Tensor, z: torch.Tensor, yb: torch.Tensor) -> None:
        sums["loss"] += float(loss_fn(z, yb, opts, features=h, classifier=W.to(h.device))) * len(yb)
        sums["h_sq"] += float(h.double().square().sum())
        if lca is not None:
            # HUG decides by the nearest proxy in angle: its logits are ĥŴᵀ
            logits = (h / h.norm(dim=1, keepdim=True)) @ W_seen.to(h.device).T if normalized else z
            predictions.append(prediction_sums(logits, yb, lca))

    batches = features_of(net, x, y, batch_size, device, on_batch)
    n, loss_sum, h_sq = _summed([sum(len(yb) for _, yb in batches), sums["loss"], sums["h_sq"]], device, reduce)
    if device.type == "mps":
        W, b = W.cpu(), None if b is None else b.cpu()
    if normalized:  # HUG decides by the nearest proxy in angle: features, proxies and logits ĥŴᵀ
        W = W / W.norm(dim=1, keepdim=True)
        batches = [(h / h.norm(dim=1, keepdim=True), yb) for h, yb in batches]
    row = {"loss": loss_sum / n, "H_norm_sq": h_sq}
    row.update(nc_metrics_streaming(batches, K, W, b, reduce=reduce))
    if not etf_exists(K, W.shape[1]):
        row.update(nc2=math.nan, nc3=math.nan, nc2_W=math.nan)  # no simplex ETF in R^d to compare with
    if lca is not None:
        row.update(prediction_metrics(_total(predictions, reduce)))
        if frame_gram is not None:
            cs = _total([class_sums(h, yb, K) for h, yb in batches], reduce)
            row.update(mean_geometry_metrics(cs.sums / cs.counts[:, None], frame_gram, W))
    return row
