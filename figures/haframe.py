"""Figure 6: HAFrame — the frame Gram S next to the learned class-mean cosines on the CIFAR-100 tree, and
angular collapse over training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import runs
from figures.style import THEORY, plt
from ufm.config import SimConfig
from ufm.losses import LossConfig
from ufm.problem import resolve

CAPTION = ("HAFrame on the CIFAR-100 tree (UFM with the fixed frame, γ = 2, α = 0.4, λ_H = 5e-4, n = 5, d = 128): "
           "the frame's Gram S and the cosines of the learned class means (classes in tree order), and the angular "
           "collapse "
           "mean |cos∠(μ_i, μ_j) − S_ij| against steps, which ends at the fixed-frame optimum's value (dashed), "
           "close to but not at 0")


def build(out: Path, smoke: bool) -> plt.Figure:
    tree = "balanced:2,3" if smoke else "cifar100"
    cfg = SimConfig(K=6 if smoke else 100, n=5, d=16 if smoke else 128, loss=LossConfig("haframe", hierarchy=tree),
                    optimizer="lbfgs", dtype="float64", steps=50 if smoke else 300)
    run = runs.simulate(out, "haframe", cfg)
    summary, hist = runs.summary(run), runs.history(run)
    problem = resolve(cfg)
    classes = problem.tree
    # classes in the tree's order (grouped by their chain of ancestors), so the hierarchy shows as blocks
    order = sorted(range(cfg.K), key=lambda k: classes.path_to_root(classes.leaves[k])[::-1])
    learned = np.array(summary["grams"]["means_cos"]["measured"])[np.ix_(order, order)]
    S = problem.frame_gram[np.ix_(order, order)]
    low = min(S.min(), learned.min(), 0.0)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    for ax, M, title in ((axes[0], S, "frame Gram S (γ = 2, s_min at the PSD bound)"),
                         (axes[1], learned, "cosines of the learned class means")):
        im = ax.imshow(M, vmin=low, vmax=1, cmap="viridis")
        ax.set(title=title, xlabel="class (in tree order)", ylabel="class (in tree order)")
        ax.grid(False)
    fig.colorbar(im, ax=axes[:2], shrink=0.8, label="cosine (dimensionless)")
    steps = [max(r["step"], 0.5) for r in hist]
    axes[2].plot(*runs.positive(steps, [r["angular_mean"] for r in hist]), label="measured (class means)")
    predicted = summary["theory"]["predicted"].get("angular_mean") if summary["theory"]["applies"] else None
    if predicted:
        axes[2].axhline(predicted, label=f"fixed-frame optimum {predicted:.2e}", **THEORY)
    axes[2].set(xscale="log", yscale="log", xlabel="L-BFGS step (log; 0 at 0.5)",
                ylabel="angular collapse (log, dimensionless)", title="mean |cos∠(μ_i, μ_j) − S_ij|")
    axes[2].legend()
    fig.suptitle(f"HAFrame on the {tree} tree: the class means collapse onto the hierarchy-aware frame")
    return fig
