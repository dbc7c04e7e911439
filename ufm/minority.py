"""The minority-collapse report of an imbalanced run (Fang, He, Long & Su 2021; DESIGN §5.2).

With K_A majority and K_B minority classes (the last K_B), the minority classifiers of a CE-trained UFM
become parallel as the imbalance ratio R = n_A/n_B grows. The report holds the run's mean pairwise
cosine between minority classifiers and two predictions: the UFM's own global optimum (the convex
certificate, exact for this weight-decayed model, with the ratio from which its minority classifiers
are parallel) and the layer-peeled model (LPM) with norm budgets set
to the run's end point — E_W = (1/K)Σ‖w_k‖², E_H = (1/K)Σ_k mean_{i∈k}‖x_i‖² — with the ratio at which
the LPM's minority classifiers become parallel for those budgets. The LPM bounds the features per class
(each class counts equally) where weight decay bounds them per sample, so the two models differ once the
classes are imbalanced.
"""

from __future__ import annotations

import torch

from ufm.config import SimConfig
from ufm.model import final_state


def minority_summary(params: dict[str, torch.Tensor], y: torch.Tensor, cfg: SimConfig, convex=None,
                     with_critical_ratio: bool = True) -> dict:
    from analysis.convex import critical_ratios, layer_peeled_model, mean_pairwise_cosine, ufm_critical_ratio
    from ufm.targets import CERTIFICATE_MAX_K

    K_B = cfg.minority
    K_A = cfg.K - K_B
    minority = range(K_A, cfg.K)
    with torch.no_grad():
        p, X = final_state(params, cfg.act)
        W = p["W"]
        G = (W @ W.T).cpu().numpy()
        norms = torch.linalg.norm(W, dim=1)
        class_sq = torch.zeros(cfg.K, dtype=torch.float64, device=X.device).index_add_(0, y, (X * X).sum(1))
        counts = torch.bincount(y, minlength=cfg.K).double()
    n_A, n_B = cfg.class_counts[0], cfg.class_counts[-1]
    out = {"ratio": n_A / n_B, "requested_ratio": float(cfg.imbalance), "K_A": K_A, "K_B": K_B,
           "counts": list(cfg.class_counts), "cosine": mean_pairwise_cosine(G, minority),
           "norm_ratio": float(norms[K_A:].mean() / norms[:K_A].mean())}
    if K_B < 2:
        out["skipped"] = "one minority class: no pairwise cosine"
        return out
    if convex is not None and cfg.d >= convex.rank:
        out["ufm_optimum_cosine"] = mean_pairwise_cosine(convex.grams["W"], minority)
    elif convex is not None:
        out["skipped"] = f"d = {cfg.d} < rank {convex.rank} of the convex optimum: no UFM prediction"
    if cfg.loss != "ce" or not cfg.certificate or cfg.K > CERTIFICATE_MAX_K or cfg.depth > 1:
        out.setdefault("skipped", "the LPM and the critical ratios need --loss ce, depth 1, K <= "
                                  f"{CERTIFICATE_MAX_K} and the certificate")
        return out
    try:
        if with_critical_ratio and "ufm_optimum_cosine" in out:
            out["ufm_parallel_ratio"] = ufm_critical_ratio(K_A, K_B, n_A, cfg.wd_W, cfg.wd_H, wd_b=cfg.wd_b,
                                                           bias=cfg.bias)
        E_W = float((norms**2).mean())
        E_H = float((class_sq / counts).mean())
        if min(E_W, E_H) < 1e-10:
            out["skipped"] = "W and H collapsed to 0: no LPM with these budgets"
            return out
        lpm = layer_peeled_model(cfg.class_counts, E_W, E_H)
        out.update(lpm_E_W=E_W, lpm_E_H=E_H, lpm_cosine=mean_pairwise_cosine(lpm.gram_classifiers, minority))
        if with_critical_ratio:
            out["lpm_parallel_ratio"] = critical_ratios(K_A, K_B, E_W, E_H)["parallel"]
    except (RuntimeError, ValueError) as e:  # a solver failure must not cost the run its summary
        out["skipped"] = f"solver failed: {e}"
    return out
