"""The shared matplotlib style: measured quantities as solid lines, theory as dashed grey lines."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402

THEORY = {"color": "0.35", "linestyle": "--", "linewidth": 1.2}


def apply() -> None:
    plt.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    })
