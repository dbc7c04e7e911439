"""What is measured at an evaluation step of a UFM run: objective, gradient norm, norms, logits, NC metrics
(of the classifier's input X: H, or the last hidden layer's output in a deep UFM, with NC1/NC2 at every
layer's input)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from analysis.hierarchical_metrics import hierarchical_metrics
from analysis.metrics import class_means, gnc_metrics, nc_metrics
from analysis.theory import etf_exists
from ufm.model import classify, hidden_names, layer_inputs, objective_and_grad, with_classifier
from ufm.problem import Problem

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
    ‖∇F‖ and the logits Z (N × K) of its current iterate."""

    loss: float
    data_loss: float
    grad_norm: float
    logits: torch.Tensor


def measure(params: dict[str, torch.Tensor], y: torch.Tensor, problem: Problem,
            known: ObjectiveValues | None = None) -> dict[str, float]:
    """One history row (without step and time). `loss` is the full objective F; `data_loss` its mean loss.

    Measured on a float64 copy of the parameters, so a float32 run's loss and gradient norm are
    those of its iterate, not float32 round-off (summing N losses in float32 errs by ~1e-6 relative).
    `known`: F, ‖∇F‖ and the logits from the stepper (ufm.fit.fixed_frame.LogitGD), instead of autograd on N × d.
    """
    cfg = problem.cfg
    params = {k: p.detach().double().requires_grad_(p.requires_grad and known is None) for k, p in params.items()}
    params = with_classifier(params, problem, y)  # a loss of the features alone: W = the class-mean classifier
    if known is None:
        F, data = objective_and_grad(params, y, problem)
        grad_norm = math.sqrt(sum(float(p.grad.square().sum()) for p in params.values() if p.requires_grad))
    else:
        F, data, grad_norm = known.loss, known.data_loss, known.grad_norm
    with torch.no_grad():
        inputs = layer_inputs(params, cfg.act, nonneg=cfg.features == "nonneg")
        X, W, b = inputs[-1], params["W"], params.get("b")  # X: the classifier's input (H when L = 1)
        Z = classify(params, X, cfg.normalize, cfg.temperature) if known is None else known.logits
        z_true = Z.gather(1, y[:, None]).squeeze(1)
        z_other = (Z.sum(1) - z_true) / (cfg.K - 1)
        row = {
            "loss": float(F),
            "data_loss": float(data),
            "grad_norm": grad_norm,
            "W_norm_sq": float(W.square().sum()),
            "H_norm_sq": float(torch.linalg.vector_norm(params["H"]).square()),
            "z_true": float(z_true.mean()),
            "z_other": float(z_other.mean()),
            "logit_gap": float((z_true - z_other).mean()),
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
        logits = Z if cfg.normalize == "none" and cfg.loss.name != "hug" else None  # = X Wᵀ + b, computed
        row.update(nc_metrics(X, y, W, b, K=cfg.K, logits=logits))
        if not etf_exists(cfg.K, cfg.feature_dim):
            # no simplex ETF exists in R^d: a distance to one measures nothing (the GNC measures below do)
            row.update(nc2=math.nan, nc3=math.nan, nc2_W=math.nan)
        row.update(gnc_metrics(X, y, W, K=cfg.K, s=problem.gnc_exponent))
        if problem.tree is not None:
            # mistake severity, HierDist@k, and angular collapse / hierarchy-aware NC2 against the
            # HAFrame Gram S of the tree (the classifier of --loss haframe; a reference for the others)
            row.update(hierarchical_metrics(X, y, problem.tree.lca_heights, W, b, problem.frame_gram, K=cfg.K,
                                            logits=logits))
    return row
