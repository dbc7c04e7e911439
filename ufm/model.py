"""The unconstrained-features model: free features H (N×d), optionally L − 1 hidden layers M_l (deep UFM),
classifier W (K×d, or K×width when deeper), optional bias b (K,)."""

from __future__ import annotations

import math

import numpy as np
import torch

from analysis.blocked import block_rows
from ufm.config import SimConfig
from ufm.losses.blocked import blocked_mean_loss
from ufm.problem import Problem

# N × K-shaped tensors of an autograd loss alive at once (the logits, the probabilities autograd keeps, their
# gradients, a loss's temporaries): beyond the memory budget the loss runs in blocks of rows (ufm.losses.blocked)
AUTOGRAD_COPIES = 5


def init_params(problem: Problem, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Rows of H and W drawn from N(0, init_scale²/dim · I) (norm ≈ init_scale), b = 0; hidden layers
    M_l with entries N(0, gain²/fan_in), gain 1 (linear) or √2 (ReLU), so that they preserve the scale
    of the signal (layers as small as H would start the deep product at its flat saddle at 0).

    Drawn in float64 on the CPU from `cfg.seed`, then cast and moved, so a seed gives the same start
    on every device and in both dtypes. Under `--loss haframe` W is the fixed frame (not trained:
    requires_grad is False, and it carries no weight decay).
    """
    cfg = problem.cfg
    g = torch.Generator().manual_seed(cfg.seed)
    std = cfg.init_scale / math.sqrt(cfg.d)
    params = {
        "H": torch.randn(cfg.N, cfg.d, generator=g, dtype=torch.float64) * std,
        "W": torch.randn(cfg.K, cfg.feature_dim, generator=g, dtype=torch.float64)
        * (cfg.init_scale / math.sqrt(cfg.feature_dim)),
    }
    gain = math.sqrt(2.0) if cfg.act == "relu" else 1.0
    fan_in = cfg.d
    for name in cfg.hidden_layers:
        params[name] = torch.randn(cfg.width, fan_in, generator=g, dtype=torch.float64) * (gain / math.sqrt(fan_in))
        fan_in = cfg.width
    if cfg.bias:
        params["b"] = torch.zeros(cfg.K, dtype=torch.float64)
    params = {k: v.to(device=device, dtype=dtype).requires_grad_(True) for k, v in params.items()}
    # fixed classifiers (HAFrame's frame, HUG's fixed proxies) replace the drawn W, untrained
    if cfg.loss.name == "haframe":
        params["W"] = torch.as_tensor(problem.frame.W, dtype=dtype, device=device)
    if cfg.loss.name == "hug" and cfg.loss.hug_proxies == "fixed":
        params["W"] = torch.as_tensor(np.array(problem.code.points), dtype=dtype, device=device)
    if problem.loss.features_only:  # no classifier: W is derived from the features (class_mean_classifier)
        params["W"] = torch.zeros(cfg.K, cfg.feature_dim, dtype=dtype, device=device)
    return params


def class_mean_classifier(X: torch.Tensor, y: torch.Tensor, K: int) -> torch.Tensor:
    """The unit directions of the class means of the normalized features X̂ (K × d): the nearest-class-mean
    classifier on the sphere, the classifier of a loss of the features alone (SupCon) for the NC metrics. A
    class whose mean is 0 gets a zero row.
    >>> X = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0]]); class_mean_classifier(X, torch.tensor([0, 1, 1]), 2)
    tensor([[1., 0.],
            [0., 1.]])
    """
    Xn = X / X.norm(dim=1, keepdim=True).clamp_min(torch.finfo(X.dtype).tiny)
    means = torch.zeros(K, X.shape[1], dtype=X.dtype, device=X.device).index_add_(0, y, Xn)
    return means / means.norm(dim=1, keepdim=True).clamp_min(torch.finfo(X.dtype).tiny)


def with_classifier(params: dict[str, torch.Tensor], problem: Problem, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """`params` with W filled in where the loss reads the features alone (SupCon: the class-mean classifier of
    the classifier's input); unchanged otherwise."""
    if not problem.loss.features_only:
        return params
    with torch.no_grad():
        X = layer_inputs(params, problem.cfg.act, nonneg=problem.cfg.features == "nonneg")[-1]
        return {**params, "W": class_mean_classifier(X, y, problem.cfg.K).to(params["W"].dtype)}


def trainable(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The parameters the optimizer moves (all but a fixed classifier)."""
    return {k: p for k, p in params.items() if p.requires_grad}


def hidden_names(params: dict[str, torch.Tensor]) -> list[str]:
    """The hidden layers present, in order: M1, M2, …"""
    return sorted((k for k in params if k.startswith("M")), key=lambda k: int(k[1:]))


def layer_inputs(params: dict[str, torch.Tensor], act: str = "linear", rows: torch.Tensor | None = None,
                 nonneg: bool = False) -> list[torch.Tensor]:
    """[X_0 = H, X_1 = σ(X_0 M1ᵀ), …, X_{L−1}]: the input of every layer; the last one feeds W. `nonneg`: the
    features are X_0 = ReLU(H) (--features nonneg, as after a real network's last activation)."""
    X = params["H"] if rows is None else params["H"][rows]
    X = torch.relu(X) if nonneg else X
    inputs = [X]
    for name in hidden_names(params):
        X = X @ params[name].T
        X = torch.relu(X) if act == "relu" else X
        inputs.append(X)
    return inputs


def classify(params: dict[str, torch.Tensor], X: torch.Tensor, normalize: str = "none",
             temperature: float = 1.0) -> torch.Tensor:
    """Z = X Wᵀ + b for the classifier's input X; on the sphere (Graf et al. 2021; Yaras et al. 2022) with
    `normalize` features, classifier or both, and a temperature: Z = X̂ Ŵᵀ/τ + b (rows normalized)."""
    W = params["W"]
    if normalize in ("features", "both"):
        X = X / X.norm(dim=1, keepdim=True).clamp_min(torch.finfo(X.dtype).tiny)
    if normalize in ("classifier", "both"):
        W = W / W.norm(dim=1, keepdim=True).clamp_min(torch.finfo(W.dtype).tiny)
    Z = X @ W.T
    Z = Z / temperature if normalize != "none" else Z
    return Z + params["b"] if "b" in params else Z


def logits(params: dict[str, torch.Tensor], rows: torch.Tensor | None = None, act: str = "linear",
           nonneg: bool = False) -> torch.Tensor:
    """Z = X Wᵀ + b with X = H (one layer) or the last hidden layer's output (for the samples `rows`)."""
    return classify(params, layer_inputs(params, act, rows, nonneg)[-1])


def final_state(params: dict[str, torch.Tensor], cfg: SimConfig) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Detached float64 copies of the parameters and the classifier's input X, for end-of-run reports."""
    p = {k: v.detach().double() for k, v in params.items()}
    return p, layer_inputs(p, cfg.act, nonneg=cfg.features == "nonneg")[-1]


def weight_decay(name: str, cfg: SimConfig) -> float:
    """λ of a block: wd_W, wd_H, wd_b, or wd_M for the hidden layers M1, M2, …"""
    return cfg.wd_M if name.startswith("M") else {"W": cfg.wd_W, "H": cfg.wd_H, "b": cfg.wd_b}[name]


def regularizer(params: dict[str, torch.Tensor], cfg: SimConfig) -> torch.Tensor:
    """Σ_blocks λ/2‖·‖² over the trained blocks (squared Frobenius norms, H summed over all N rows)."""
    return sum(0.5 * weight_decay(k, cfg) * torch.dot(p.reshape(-1), p.reshape(-1))
               for k, p in trainable(params).items())


def data_loss(params: dict[str, torch.Tensor], y: torch.Tensor, problem: Problem,
              rows: torch.Tensor | None = None) -> torch.Tensor:
    """mean_i ℓ(z_i, y_i) over all samples, or over the mini-batch `rows`. The logits of a loss computed sample by
    sample exist one block of rows at a time when all of them would exceed the memory budget (analysis.blocked;
    ufm.losses.blocked recomputes each block in the backward pass); the losses of the features and proxies alone
    (HUG, SupCon) read no logits."""
    cfg, entry = problem.cfg, problem.loss
    X = layer_inputs(params, cfg.act, rows, cfg.features == "nonneg")[-1]
    labels = y if rows is None else y[rows]
    if not entry.rowwise:
        return entry(None, labels, problem.options, features=X, classifier=params["W"])

    def block_loss(Xb: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, yb: torch.Tensor) -> torch.Tensor:
        Z = classify({"W": W} if b is None else {"W": W, "b": b}, Xb, cfg.normalize, cfg.temperature)
        return entry(Z, yb, problem.options, features=Xb, classifier=W)

    block = block_rows(cfg.K, itemsize=X.element_size(), copies=AUTOGRAD_COPIES, device=X.device)
    if block >= X.shape[0]:
        return block_loss(X, params["W"], params.get("b"), labels)
    return blocked_mean_loss(block_loss, X, params["W"], params.get("b"), labels, block)


def objective_and_grad(params: dict[str, torch.Tensor], y: torch.Tensor, problem: Problem,
                       rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, data loss) with ∇F left in each parameter's .grad; F = data loss + regularizer.

    Autograd runs through the data loss only; the regularizer's gradient λp is added in place
    (its backward through p.square() costs several passes over H, more than the matrix products).
    """
    cfg, moving = problem.cfg, trainable(params)
    for p in moving.values():
        p.grad = None
    data = data_loss(params, y, problem, rows)
    data.backward()
    with torch.no_grad():
        for k, p in moving.items():
            p.grad.add_(p, alpha=weight_decay(k, cfg))
        F = data.detach() + regularizer(params, cfg)
    return F, data.detach()
