"""Figure 3: SQI — the closed-form classifier norms at the run's ε against the measured ones, across λ and K."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import runs
from figures.style import THEORY, plt
from ufm.config import SimConfig

CAPTION = ("Symmetric quasi-interpolation: for MSE runs with a free bias, the closed-form ‖w_c‖² at the run's own "
           "interpolation gap ε (Rangamani & Banburski) against the measured mean ‖w_c‖², for K = 3, 5, 10 and "
           "λ = 3e-4 … 1e-2 (n = 20, d = 32, float64 L-BFGS); every point lies on y = x, and the right panel gives "
           "the relative errors")


def build(out: Path, smoke: bool) -> plt.Figure:
    Ks, wds = ((3, 5), (1e-3, 1e-2)) if smoke else ((3, 5, 10), (3e-4, 1e-3, 3e-3, 1e-2))
    fig, (ax, err) = plt.subplots(1, 2, figsize=(9.5, 4), constrained_layout=True)
    markers = dict(zip(wds, "osD^v", strict=False))
    lo, hi, skipped = np.inf, 0.0, 0
    for i, K in enumerate(Ks):
        for wd in wds:
            cfg = SimConfig(K=K, n=10 if smoke else 20, d=16 if smoke else 32, loss="mse", bias=True, wd_W=wd,
                            wd_H=wd, wd_b=0.0, optimizer="lbfgs", dtype="float64", steps=100 if smoke else 500,
                            certificate=False)
            sqi = runs.summary(runs.simulate(out, f"K{K}-wd{wd:g}", cfg))["sqi"]
            if not sqi["is_sqi"] or max(sqi["W_row_norm_sq"]) < 1e-8:
                skipped += 1  # not SQI, or W collapsed to 0 (λ past its critical value): nothing to compare
                continue
            measured, predicted = float(np.mean(sqi["W_row_norm_sq"])), sqi["sqi_W_row_norm_sq"]
            ax.scatter(predicted, measured, color=f"C{i}", marker=markers[wd], s=30,
                       label=f"K = {K}, λ = {wd:g}")
            err.scatter(wd, max(sqi["sqi_norm_rel_error"], 1e-16), color=f"C{i}", marker=markers[wd], s=30)
            lo, hi = min(lo, predicted, measured), max(hi, predicted, measured)
    line = np.array([lo / 1.5, hi * 1.5])
    ax.plot(line, line, label="y = x (theory)", **THEORY)
    ax.set(xscale="log", yscale="log", xlabel="SQI closed form ‖w_c‖² at the run's ε (log)",
           ylabel="measured mean ‖w_c‖² (log)", title="classifier norms: measured against predicted")
    ax.legend(fontsize=6, ncol=2)
    ax.text(0.98, 0.02, f"{skipped} run(s) not SQI or collapsed, not drawn", transform=ax.transAxes, ha="right",
            fontsize=7)
    err.set(xscale="log", yscale="log", xlabel="weight decay λ_W = λ_H (log; λ_b = 0)",
            ylabel="relative error of ‖w_c‖² (log)", title="relative error (float64 L-BFGS)")
    fig.suptitle("SQI closed forms against measurement (UFM, MSE, free bias)")
    return fig
