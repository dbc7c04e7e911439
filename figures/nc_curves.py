"""Figure 1: NC1–NC4 against optimizer steps for the UFM under CE and under MSE (K = 10), log scale."""

from __future__ import annotations

from pathlib import Path

from figures import runs
from figures.style import plt
from ufm.config import SimConfig

CAPTION = ("NC1–NC4 against gradient-descent steps of the UFM (K = 10, n = 100, d = 512, λ = 5e-4) under "
           "cross-entropy and MSE; both collapse to the simplex ETF (the theory's value 0 lies off the log axis)")


def build(out: Path, smoke: bool) -> plt.Figure:
    size = dict(K=4, n=5, d=8, steps=200) if smoke else dict(K=10, n=100, d=512)
    rows = {loss: runs.history(runs.simulate(out, loss, SimConfig(loss=loss, **size))) for loss in ("ce", "mse")}
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.3), constrained_layout=True, sharex=True)
    titles = {"nc1": "NC1 = tr(Σ_W Σ_B†)/K", "nc2": "NC2: means vs simplex ETF", "nc3": "NC3: W vs means (duality)",
              "nc4": "NC4: mismatch with nearest mean"}
    for ax, key in zip(axes, titles, strict=True):
        for loss, hist in rows.items():
            x, y = runs.positive([max(r["step"], 0.5) for r in hist], [r[key] for r in hist])
            ax.plot(x, y, label={"ce": "cross-entropy", "mse": "MSE"}[loss])
        ax.set(xscale="log", yscale="log", title=titles[key], xlabel="GD step (log; step 0 at 0.5)",
               ylabel=f"{key} (log, dimensionless)")
    axes[0].legend()
    zero_from = {loss: next((r["step"] for i, r in enumerate(h) if all(x["nc4"] == 0 for x in h[i:])), None)
                 for loss, h in rows.items()}
    axes[3].text(0.02, 0.02, "NC4 = 0 (off the log axis) from step " +
                 ", ".join(f"{s:g} ({loss.upper()})" for loss, s in zero_from.items() if s is not None),
                 transform=axes[3].transAxes, fontsize=7)
    fig.suptitle(f"UFM, K = {size['K']}, λ_W = λ_H = 5e-4: neural collapse under CE and MSE")
    return fig
