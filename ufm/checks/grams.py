"""The Gram matrices of the run's end point (WWᵀ, centered class means, cosines of the means) against the ones
the theory target predicts.

It applies where the target has Grams: theory targets build them up to K = analysis.theory.GRAMS_MAX_K (1000),
beyond which they are omitted and this check does not run (no K×K matrix). The matrices themselves are written
into summary.json up to K = LIST_MAX_K (a 1000-class Gram is a million numbers per matrix); beyond it the block
holds the relative errors only."""

from __future__ import annotations

import numpy as np
import torch

from analysis.metrics import class_means
from analysis.theory import GRAMS_MAX_K
from ufm.config import SimConfig
from ufm.model import final_state

NAME, ORDER = "grams", 10
LIST_MAX_K = 256
LABELS = {"W": "WWᵀ", "means": "MMᵀ (centered means)", "means_cos": "cosines of the class means"}


def applies(run) -> bool:
    return (run.status != "diverged" and run.target.applies and bool(run.target.grams)
            and run.cfg.K <= GRAMS_MAX_K)


def compute(run) -> dict:
    return gram_errors(run.params, run.y, run.cfg, run.target.grams)


def lines(block: dict) -> list[str]:
    errs = ", ".join(f"{LABELS[k]} {v['rel_error']:.2e}" for k, v in block.items())
    return [f"Gram matrices, relative Frobenius error to the predicted ones: {errs}"]


def gram_errors(params: dict[str, torch.Tensor], y: torch.Tensor, cfg: SimConfig,
                predicted: dict[str, np.ndarray]) -> dict[str, dict]:
    """Measured K×K Grams WWᵀ, MMᵀ (class means centered at the sample mean) and the cosines of the
    (uncentered) class means against the predicted ones ("W", "means", "means_cos"):
    {key: {"measured", "predicted", "rel_error"}}, rel_error = ‖G − G*‖_F/‖G*‖_F; for K > LIST_MAX_K without the
    matrices ("matrices" says so)."""
    with torch.no_grad():
        p, X = final_state(params, cfg)
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
        out[key] = ({"measured": measured[key].tolist(), "predicted": np.asarray(G).tolist(), "rel_error": err}
                    if cfg.K <= LIST_MAX_K else
                    {"rel_error": err, "matrices": f"not written: K = {cfg.K} > {LIST_MAX_K}"})
    return out
