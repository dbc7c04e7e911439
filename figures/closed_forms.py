"""Figure 4: closed forms — measured objective, ‖W‖² and ‖H‖² against λ with the theory curves (CE, MSE)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import runs
from figures.style import THEORY, plt
from ufm.checks.theory import closed_form
from ufm.config import SimConfig
from ufm.problem import resolve

CAPTION = ("The UFM's optimum against weight decay λ = λ_W = λ_H (K = 10, n = 20, d = 32, float64 L-BFGS): "
           "measured objective F, ‖W‖² and ‖H‖² (points) on the closed-form curves (dashed) for cross-entropy "
           "(simplex-ETF optimum) and bias-free MSE; past the critical λ the optimum is W = H = 0")

QUANTITIES = (("loss", "objective F"), ("W_norm_sq", "‖W‖²"), ("H_norm_sq", "‖H‖²"))


def _cfg(loss: str, wd: float, smoke: bool, **kw) -> SimConfig:
    return SimConfig(K=4 if smoke else 10, n=5 if smoke else 20, d=8 if smoke else 32, loss=loss, wd_W=wd, wd_H=wd,
                     wd_b=wd, optimizer="lbfgs", dtype="float64", steps=100 if smoke else 500, **kw)


def build(out: Path, smoke: bool) -> plt.Figure:
    grids = {"ce": np.geomspace(1e-4, 3e-2, 3 if smoke else 7), "mse": np.geomspace(1e-4, 1e-1, 3 if smoke else 7)}
    fig, axes = plt.subplots(2, 3, figsize=(11, 6), constrained_layout=True)
    for row, loss in zip(axes, ("ce", "mse"), strict=True):
        dense = np.geomspace(grids[loss][0] / 1.5, grids[loss][-1] * 1.5, 200)
        theory = [closed_form(resolve(_cfg(loss, wd, smoke, certificate=False))).predicted for wd in dense]
        finals = [runs.summary(runs.simulate(out, f"{loss}-wd{wd:.3g}", _cfg(loss, wd, smoke, certificate=False)))
                  ["final"] for wd in grids[loss]]
        for ax, (key, label) in zip(row, QUANTITIES, strict=True):
            ax.plot(dense, [t[key] for t in theory], label="closed form", **THEORY)
            ax.plot(grids[loss], [f[key] for f in finals], "o", label="simulated UFM")
            ax.set(xscale="log", xlabel="λ = λ_W = λ_H (log)", ylabel=f"{label} (linear, dimensionless)",
                   title=f"{'cross-entropy' if loss == 'ce' else 'MSE (no bias)'}: {label}")
        row[0].legend()
    fig.suptitle("Closed-form optima of the UFM against simulation")
    return fig
