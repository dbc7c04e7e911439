"""The symmetric-quasi-interpolation check of a square-loss run (Rangamani & Banburski; DESIGN §5.2).

Outputs f_i = W x_i + b (x_i the classifier's input). SQI: f_{i,y_i} = 1 − ε and f_{i,c} = ε/(K−1) for
c ≠ y_i. At a stationary last layer (square loss ½‖f − y‖², weight decay λ_W on W):

    w_c = (1/(λN)) Σ_i (y_i − f_i)_c x_i,   so   ‖w_c‖² = (1/(λN)) Σ_i (y_i − f_i)_c (f_{i,c} − b_c)

at any critical point (the general identity; with b = 0 it is DESIGN's form), and under SQI
‖w_c‖² = (ε − Kε²/(K−1))/(Kλ), w_c = ε/(λ(K−1))·(μ_c − μ_G).

No N×K matrix is held. ε and the off-class mean come from the class sums of the features (Σ_i f_{i,y_i} =
Σ_k w_k·Σ_{i∈k} x_i + n_k b_k, Σ_i Σ_c f_ic = (Σ_c w_c)·Σ_i x_i + N Σ_c b_c: O(N·d + K·d)); the off-class spread
about that mean and the identity's column sums take one pass over the outputs, one block of rows at a time
(`analysis.blocked.logit_blocks`, within the memory budget): O(N·K·d), a third of one training step.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from analysis.blocked import logit_blocks
from analysis.metrics import class_means
from analysis.theory import sqi_classifier, sqi_classifier_norm_sq
from ufm.config import SimConfig
from ufm.model import final_state

NAME, ORDER = "sqi", 50

# outputs count as symmetric quasi-interpolating when the off-class outputs match ε/(K−1) this closely
# (relative to ε/(K−1), in mean and in spread) and ε is positive
SQI_RTOL = 1e-2
# beyond this relative error the general identity says the last layer has not reached a critical point
IDENTITY_RTOL = 1e-3


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def sqi_summary(params: dict[str, torch.Tensor], y: torch.Tensor, cfg: SimConfig) -> dict:
    """The `sqi` block of summary.json for a square-loss run (balanced classes; targets s·e_y)."""
    with torch.no_grad():
        p, X = final_state(params, cfg)
        W, b = p["W"], p.get("b")
        K, s, N = cfg.K, cfg.loss.target_scale, len(y)
        class_sums = torch.zeros(K, X.shape[1], dtype=X.dtype, device=X.device).index_add_(0, y, X)
        true_sum = float((W * class_sums).sum())
        total = float(W.sum(0) @ X.sum(0))
        if b is not None:
            true_sum += float(torch.bincount(y, minlength=K).to(b.dtype) @ b)
            total += N * float(b.sum())
        eps = (s - true_sum / N) / s  # SQI is defined for unit targets: outputs scaled by 1/s
        off_mean = (total - true_sum) / (N * (K - 1))
        spread = torch.zeros((), dtype=X.dtype, device=X.device)
        # the identity's Σ_i (y_i − f_i)_c (f_{i,c} − b_c), per column c (analysis.theory.stationary_norm_identity)
        columns = torch.zeros(K, dtype=X.dtype, device=X.device)
        for rows, F in logit_blocks(X, W, b, copies=4):
            idx, true = torch.arange(F.shape[0], device=F.device), y[rows]
            if cfg.wd_W > 0:
                residual = -F
                residual[idx, true] += s
                columns += (residual * (F if b is None else F - b)).sum(0)
                del residual
            dev = F.sub_(off_mean)
            dev[idx, true] = 0.0
            spread += (dev * dev).sum()
        off_std = math.sqrt(float(spread) / (N * (K - 1))) / s
        off_mean /= s
        measured = (W * W).sum(1).cpu().numpy()
        identity = (columns / (cfg.wd_W * N)).cpu().numpy() if cfg.wd_W > 0 else None
        means = class_means(X, y, K)
        M = (means - X.mean(0)).cpu().numpy()
    symmetric = eps / (K - 1)
    out: dict = {
        "epsilon": eps, "off_class_mean": off_mean, "off_class_std": off_std,
        "symmetric_off_class": symmetric,
        "off_class_rel_error": abs(off_mean - symmetric) / abs(symmetric) if symmetric else math.inf,
        "W_row_norm_sq": measured.tolist(),
    }
    if identity is not None:
        out["identity_W_row_norm_sq"] = identity.tolist()
        out["identity_rel_error"] = _rel(measured, identity)
    is_sqi = (eps > 0 and out["off_class_rel_error"] <= SQI_RTOL and off_std <= SQI_RTOL * abs(symmetric)
              and cfg.balanced and cfg.wd_W > 0)
    out["is_sqi"] = bool(is_sqi)
    if is_sqi:
        norm_sq = sqi_classifier_norm_sq(eps, K, cfg.wd_W) * s**2
        W_sqi = sqi_classifier(eps, K, cfg.wd_W, M) * s
        Wm = W.cpu().numpy()
        cos = (Wm * W_sqi).sum(1) / (np.linalg.norm(Wm, axis=1) * np.linalg.norm(W_sqi, axis=1))
        out.update(sqi_W_row_norm_sq=norm_sq, sqi_norm_rel_error=_rel(measured, np.full(K, norm_sq)),
                   sqi_direction_cosine_min=float(cos.min()),
                   sqi_W_rel_error=float(np.linalg.norm(Wm - W_sqi) / np.linalg.norm(W_sqi)))
        out["verdict"] = (f"SQI: off-class outputs {off_mean:.4g} ± {off_std:.1e} against ε/(K−1) = "
                          f"{symmetric:.4g} (ε = {eps:.4g})")
    else:
        why = ("weight decay on W is 0" if cfg.wd_W == 0 else "classes are imbalanced" if not cfg.balanced
               else f"off-class outputs {off_mean:.4g} ± {off_std:.1e}, not ε/(K−1) = {symmetric:.4g}")
        out["verdict"] = f"SQI does not apply: {why}; the closed forms are not evaluated"
    if out.get("identity_rel_error", 0.0) > IDENTITY_RTOL:
        out["verdict"] += (f" (the stationarity identity is off by {out['identity_rel_error']:.1e}: the last layer "
                           "is not at a critical point yet)")
    return out


def applies(run) -> bool:
    return run.cfg.loss.name == "mse" and run.measured


def compute(run) -> dict:
    return sqi_summary(run.params, run.y, run.cfg)


def lines(q: dict) -> list[str]:
    lines = [q["verdict"]]
    if "identity_rel_error" in q:
        lines.append(f"stationarity identity ‖w_c‖² = (1/(λN)) Σ_i (y_i − f_i)_c (f_i − b)_c: max relative error "
                     f"{q['identity_rel_error']:.2e}")
    if q["is_sqi"]:
        lines.append(f"SQI closed forms at ε = {q['epsilon']:.6g}: ‖w_c‖² = {q['sqi_W_row_norm_sq']:.6g} (max relative "
                     f"error {q['sqi_norm_rel_error']:.2e}); w_c ∥ μ_c − μ_G (min cosine "
                     f"{q['sqi_direction_cosine_min']:.8f}, relative error of W {q['sqi_W_rel_error']:.2e})")
    return lines
