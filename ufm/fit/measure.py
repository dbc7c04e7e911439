"""What is measured at an evaluation step of a UFM run: objective, gradient norm, norms, logits, NC metrics
(of the classifier's input X: H, or the last hidden layer's output in a deep UFM, with NC1/NC2 at every
layer's input)."""

from __future__ import annotations

import math

import numpy as np
import torch

from analysis.hierarchical_metrics import hierarchical_metrics
from analysis.metrics import class_means, gnc_metrics, nc_metrics
from analysis.theory import etf_exists
from ufm.config import SimConfig
from ufm.model import classify, final_state, hidden_names, layer_inputs, objective_and_grad
from ufm.problem import class_tree, frame_gram, gnc_exponent


def measure(params: dict[str, torch.Tensor], y: torch.Tensor, cfg: SimConfig) -> dict[str, float]:
    """One history row (without step and time). `loss` is the full objective F; `data_loss` its mean loss.

    Measured on a float64 copy of the parameters, so a float32 run's loss and gradient norm are
    those of its iterate, not float32 round-off (summing N losses in float32 errs by ~1e-6 relative).
    """
    params = {k: p.detach().double().requires_grad_(p.requires_grad) for k, p in params.items()}
    F, data = objective_and_grad(params, y, cfg)
    grads = [p.grad for p in params.values() if p.requires_grad]
    with torch.no_grad():
        inputs = layer_inputs(params, cfg.act)
        X, W, b = inputs[-1], params["W"], params.get("b")  # X: the classifier's input (H when L = 1)
        Z = classify(params, X)
        z_true = Z.gather(1, y[:, None]).squeeze(1)
        z_other = (Z.sum(1) - z_true) / (cfg.K - 1)
        row = {
            "loss": float(F),
            "data_loss": float(data),
            "grad_norm": math.sqrt(sum(float(g.square().sum()) for g in grads)),
            "W_norm_sq": float(W.square().sum()),
            "H_norm_sq": float(params["H"].square().sum()),
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
        if cfg.loss == "hug":
            # HUG's loss sees only directions (norms are free): its features are ĥ and it classifies by
            # the nearest proxy in angle, so the NC metrics are those of the normalized H and W
            X, W = X / X.norm(dim=1, keepdim=True), W / W.norm(dim=1, keepdim=True)
        row.update(nc_metrics(X, y, W, b, K=cfg.K))
        if not etf_exists(cfg.K, cfg.feature_dim):
            # no simplex ETF exists in R^d: a distance to one measures nothing (the GNC measures below do)
            row.update(nc2=math.nan, nc3=math.nan, nc2_W=math.nan)
        row.update(gnc_metrics(X, y, W, K=cfg.K, s=gnc_exponent(cfg)))
        if cfg.hierarchy is not None:
            # mistake severity, HierDist@k, and angular collapse / hierarchy-aware NC2 against the
            # HAFrame Gram S of the tree (the classifier of --loss haframe; a reference for the others)
            row.update(hierarchical_metrics(X, y, class_tree(cfg.hierarchy, cfg.K).lca_heights, W, b,
                                            frame_gram(cfg)[0], K=cfg.K))
    return row


def gram_errors(params: dict[str, torch.Tensor], y: torch.Tensor, cfg: SimConfig,
                predicted: dict[str, np.ndarray]) -> dict[str, dict]:
    """Measured K×K Grams WWᵀ, MMᵀ (class means centered at the sample mean) and the cosines of the
    (uncentered) class means against the predicted ones ("W", "means", "means_cos"):
    {key: {"measured", "predicted", "rel_error"}}, rel_error = ‖G − G*‖_F/‖G*‖_F."""
    with torch.no_grad():
        p, X = final_state(params, cfg.act)
        W = p["W"]
        means = class_means(X, y, cfg.K)
        M = means - X.mean(0)
        unit = means / means.norm(dim=1, keepdim=True)
        measured = {"W": (W @ W.T).cpu().numpy(), "means": (M @ M.T).cpu().numpy(),
                    "means_cos": (unit @ unit.T).cpu().numpy()}
    out = {}
    for key, G in predicted.items():
        norm = np.linalg.norm(G)
        err = float(np.linalg.norm(measured[key] - G) / norm) if norm > 0 else float(np.linalg.norm(measured[key]))
        out[key] = {"measured": measured[key].tolist(), "predicted": np.asarray(G).tolist(), "rel_error": err}
    return out
