"""Figure 5: minority collapse — the mean cosine between minority classifiers against the imbalance ratio."""

from __future__ import annotations

import math
from pathlib import Path

from figures import runs
from figures.style import THEORY, plt
from ufm.config import SimConfig

CAPTION = ("Minority collapse (Fang et al. 2021): mean pairwise cosine of the K_B = 3 minority classifiers against "
           "the imbalance ratio R = n_A/n_B (K_A = 7, n_A = 100, d = 32, λ = 5e-4, CE, float64 L-BFGS): the simulated "
           "UFM (points) on its certified convex optimum (dashed), and the layer-peeled model (LPM, dash-dotted) "
           "with the run's own norm budgets; right: the minority/majority classifier norm ratio. The LPM bounds "
           "the features per class where weight decay bounds them per sample, so it underestimates the UFM's "
           "collapse; a cosine of 1 (identical minority classifiers) lies beyond R = 100 at this n_A: from "
           "R* = 816 in closed form (√n_B <= N·sqrt(λ_W·λ_H))")


def build(out: Path, smoke: bool) -> plt.Figure:
    ratios = (1, 10) if smoke else (1, 2, 5, 10, 20, 50, 100)
    n_A = 20 if smoke else 100
    rows = []
    for R in ratios:
        cfg = SimConfig(K=10, n=n_A, d=32, imbalance=R, minority=3, loss="ce", optimizer="lbfgs", dtype="float64",
                        steps=100 if smoke else 400)
        m = runs.summary(runs.simulate(out, f"R{R}", cfg))["minority"]
        rows.append((m["ratio"], m.get("cosine", math.nan), m.get("ufm_optimum_cosine", math.nan),
                     m.get("lpm_cosine", math.nan), m.get("norm_ratio", math.nan)))
    fig, (ax, norms) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    R = [r[0] for r in rows]
    ax.plot(R, [r[2] for r in rows], label="UFM optimum (certificate)", **THEORY)
    ax.plot(R, [r[3] for r in rows], label="LPM with the run's budgets", **{**THEORY, "linestyle": "-."})
    ax.plot(R, [r[1] for r in rows], "o", color="C0", label="simulated UFM")
    ax.axhline(-1 / 9, color="0.7", lw=0.8, label="balanced simplex ETF: −1/(K−1)")
    ax.set(xscale="log", xlabel="imbalance ratio R = n_A/n_B (log)", ylabel="mean cosine of minority classifiers",
           title="minority classifiers draw together as R grows", ylim=(-0.2, 1.05))
    ax.legend(fontsize=7)
    norms.plot(R, [r[4] for r in rows], "o-")
    norms.set(xscale="log", yscale="log", xlabel="imbalance ratio R (log)",
              ylabel="minority / majority ‖w‖ (log)", title="and shrink")
    fig.suptitle("Minority collapse in the UFM: simulation, certified optimum and the layer-peeled model")
    return fig
