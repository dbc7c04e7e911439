"""What is measured at an evaluation step of a UFM run: objective, gradient norm, norms, logits, NC metrics
(of the classifier's input X: H, or the last hidden layer's output in a deep UFM, with NC1/NC2 at every
layer's input)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from analysis._arrays import as_tensor
from analysis.blocked import block_rows, row_blocks
from analysis.hierarchical_metrics import DEFAULT_KS, hierarchical_metrics, prediction_sums
from analysis.metrics import class_means, gnc_metrics, nc_metrics
from analysis.pairwise import cosine_pair_stats
from analysis.theory import etf_exists
from ufm.fit.fused_gd import LossSpec, blocked_objective
from ufm.model import classify, hidden_names, layer_inputs, objective_and_grad, with_classifier
from ufm.problem import Problem

# N × K-shaped float64 temporaries of a measurement's block of logits (the logits, the ranking's sort, its gathers)
MEASURE_COPIES = 4
RANK_RTOL = 1e-6  # a class-mean singular value below this fraction of the largest counts as zero
SV_MAX = 16  # deep runs record the largest SV_MAX singular values of the class means at every layer


def layer_singular_values(row: dict, layer: int) -> list[float]:
    """The class-mean singular values a history row recorded at `layer` (sv1_layer{l}, sv2_layer{l}, …).
    >>> layer_singular_values({"sv1_layer0": 2.0, "sv2_layer0": 1.0, "sv1_layer1": 3.0}, 0)
    [2.0, 1.0]
    """
    values = []
    while f"sv{len(values) + 1}_layer{layer}" in row:
        values.append(row[f"sv{len(values) + 1}_layer{layer}"])
    return values


@dataclass
class ObjectiveValues:
    """What a stepper that knows its objective in closed form hands `measure` (in float64): F, the data loss,
    ‖∇F‖ and the logits of its current iterate, as a function of a block of rows (`logits(rows)` → Z[rows]: the
    N × K logits are never formed at once)."""

    loss: float
    data_loss: float
    grad_norm: float
    logits: Callable[[slice], torch.Tensor]


def closed_form(cfg) -> bool:
    """The one-layer UFM of free features under CE, label smoothing or MSE (the losses with a closed-form gradient,
    ufm.fit.fused_gd): a measurement takes F and ‖∇F‖ from it instead of autograd.
    >>> from ufm.config import SimConfig
    >>> closed_form(SimConfig(loss="ce")), closed_form(SimConfig(loss="focal")), closed_form(SimConfig(depth=2))
    (True, False, False)
    """
    return cfg.depth == 1 and cfg.features == "free" and cfg.normalize == "none" and cfg.loss.entry.fused


class LogitStats:
    """What a measurement reads off the logits, block by block (`add(rows, Z_rows)`): the sums of the true and the
    mean other logit, the classifier's decisions (argmax) and, with a class tree, the hierarchical prediction sums.
    >>> stats = LogitStats(torch.tensor([0, 1, 1]), 2)
    >>> stats.add(slice(0, 2), torch.tensor([[2.0, 0.0], [1.0, 3.0]]))
    >>> stats.add(slice(2, 3), torch.tensor([[5.0, 1.0]]))
    >>> stats.z_true, stats.z_other, stats.decisions.tolist()   # true logits 2, 3, 1; the others 0, 1, 5
    (6.0, 6.0, [0, 1, 0])
    """

    def __init__(self, y: torch.Tensor, K: int, lca=None) -> None:
        self.y, self.K = y, K
        self.z_true = self.z_other = 0.0
        self.decisions = torch.empty(len(y), dtype=torch.int64, device=y.device)
        self.lca = None if lca is None else as_tensor(lca, device=y.device).double()
        self.tree_sums = None

    def add(self, rows: slice, Z: torch.Tensor) -> None:
        y = self.y[rows]
        z_true = Z.gather(1, y[:, None]).squeeze(1)
        self.z_true += float(z_true.sum())
        self.z_other += float(Z.sum() - z_true.sum()) / (self.K - 1)
        self.decisions[rows] = Z.argmax(1)
        if self.lca is not None:
            part = prediction_sums(Z, y, self.lca, DEFAULT_KS)
            self.tree_sums = part if self.tree_sums is None else self.tree_sums + part


def measure(params: dict[str, torch.Tensor], y: torch.Tensor, problem: Problem,
            known: ObjectiveValues | None = None) -> dict[str, float]:
    """One history row (without step and time). `loss` is the full objective F; `data_loss` its mean loss.

    Measured on a float64 copy of the parameters, so a float32 run's loss and gradient norm are
    those of its iterate, not float32 round-off (summing N losses in float32 errs by ~1e-6 relative).
    `known`: F, ‖∇F‖ and the logits from the stepper (ufm.fit.fixed_frame.LogitGD), instead of autograd on N × d.
    """
    cfg = problem.cfg
    closed = known is None and closed_form(cfg)
    params = {k: p.detach().double().requires_grad_(p.requires_grad and known is None and not closed)
              for k, p in params.items()}
    params = with_classifier(params, problem, y)  # a loss of the features alone: W = the class-mean classifier
    N, K = len(y), cfg.K
    logit_stats = LogitStats(y, K, problem.tree.lca_heights if problem.tree is not None else None)
    rows = block_rows(K, itemsize=8, copies=MEASURE_COPIES, device=y.device)
    if closed:
        # CE, label smoothing, MSE: F and ‖∇F‖ from the closed-form gradient, the logits read on the way
        loss = cfg.loss
        F, data, grad_norm = blocked_objective(params["H"], params["W"], params.get("b"), y,
                                               LossSpec(loss.name, loss.smoothing, loss.target_scale), cfg.wd_W,
                                               cfg.wd_H, cfg.wd_b, rows, on_block=logit_stats.add)
    elif known is None:
        F, data = objective_and_grad(params, y, problem)
        grad_norm = math.sqrt(sum(float(p.grad.square().sum()) for p in params.values() if p.requires_grad))
    else:
        F, data, grad_norm = known.loss, known.data_loss, known.grad_norm
    with torch.no_grad():
        inputs = layer_inputs(params, cfg.act, nonneg=cfg.features == "nonneg")
        X, W, b = inputs[-1], params["W"], params.get("b")  # X: the classifier's input (H when L = 1)
        if not closed:
            # the logits one block of rows at a time (DESIGN §8), never the N × K matrix
            logits_of = known.logits if known is not None else (
                lambda rows: classify(params, X[rows], cfg.normalize, cfg.temperature))
            for block in row_blocks(N, rows):
                logit_stats.add(block, logits_of(block))
        row = {
            "loss": float(F),
            "data_loss": float(data),
            "grad_norm": grad_norm,
            "W_norm_sq": float(W.square().sum()),
            "H_norm_sq": float(torch.linalg.vector_norm(params["H"]).square()),
            "z_true": logit_stats.z_true / N,
            "z_other": logit_stats.z_other / N,
            "logit_gap": (logit_stats.z_true - logit_stats.z_other) / N,
        }
        if b is not None:
            row["b_norm_sq"] = float(b.square().sum())
            row["b_mean"] = float(b.mean())
        for name in hidden_names(params):
            row[f"{name}_norm_sq"] = float(params[name].square().sum())
        for layer, inp in enumerate(inputs[:-1]):
            # deep neural collapse: NC1 and NC2 at the input of every hidden layer
            m = nc_metrics(inp, y, K=cfg.K)
            row[f"nc1_layer{layer}"], row[f"nc2_layer{layer}"] = m["nc1"], m["nc2"]
        if len(inputs) > 1:
            # the low-rank bias made visible (Súkeník, Lampert & Mondelli 2024): the singular values σ1 >= σ2 …
            # of the class means at every layer's input (sv{i}_layer{l}) and their numerical rank (those above
            # RANK_RTOL of the largest)
            for layer, inp in enumerate(inputs):
                sv = torch.linalg.svdvals(class_means(inp, y, cfg.K))
                row[f"rank_layer{layer}"] = int((sv > RANK_RTOL * sv[0]).sum()) if sv[0] > 0 else 0
                for i, value in enumerate(sv[:SV_MAX].tolist(), start=1):
                    row[f"sv{i}_layer{layer}"] = value
        if cfg.loss.name == "hug":
            # HUG's loss sees only directions (norms are free): its features are ĥ and it classifies by
            # the nearest proxy in angle, so the NC metrics are those of the normalized H and W
            X, W = X / X.norm(dim=1, keepdim=True), W / W.norm(dim=1, keepdim=True)
        # on the sphere (--normalize) the loss sees the normalized blocks (and 1/τ): measure what it sees
        if cfg.normalize in ("features", "both"):
            X = X / X.norm(dim=1, keepdim=True)
        if cfg.normalize in ("classifier", "both"):
            W = W / W.norm(dim=1, keepdim=True)
        if cfg.normalize != "none":
            W = W / cfg.temperature  # X Wᵀ + b are then the logits the loss saw
        # the decisions above are argmax of X Wᵀ + b for the X, W, b measured here, except on the sphere and under HUG
        same = cfg.normalize == "none" and cfg.loss.name != "hug"
        # the pairs of W's rows once, for the NC and the GNC measures (K(K−1)/2 of them: the costliest part at K = 10⁴)
        pairs_W = cosine_pair_stats(W, problem.gnc_exponent)
        row.update(nc_metrics(X, y, W, b, K=cfg.K, predictions=logit_stats.decisions if same else None,
                              pairs_W=pairs_W))
        if not etf_exists(cfg.K, cfg.feature_dim):
            # no simplex ETF exists in R^d: a distance to one measures nothing (the GNC measures below do)
            row.update(nc2=math.nan, nc3=math.nan, nc2_W=math.nan)
        row.update(gnc_metrics(X, y, W, K=cfg.K, s=problem.gnc_exponent, pairs_W=pairs_W))
        if problem.tree is not None:
            # mistake severity, HierDist@k, and angular collapse / hierarchy-aware NC2 against the
            # HAFrame Gram S of the tree (the classifier of --loss haframe; a reference for the others)
            row.update(hierarchical_metrics(X, y, problem.tree.lca_heights, W, b, problem.frame_gram, K=cfg.K,
                                            sums=logit_stats.tree_sums if same else None))
    return row
