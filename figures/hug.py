"""Figure 8: HUG — learned proxies on the sphere (K = 4, 6, 12 in d = 3) against the minimal-energy codes, and
the generalized-NC measures against K for d = 3."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from analysis.frames import spherical_code
from analysis.uniformity import align_configuration, normalize_rows
from figures import runs
from figures.style import THEORY, plt
from ufm.config import SimConfig

CAPTION = ("HUG in d = 3 (energy measure, float64 L-BFGS, n = 10): the learned proxies on the unit sphere for "
           "K = 4, 6, 12 (dots) on the minimal-energy (Thomson) code rotated onto them (circles: the tetrahedron, "
           "octahedron and icosahedron), and against K = 4…12 the Riesz-energy gap of proxies and class means to "
           "that code (at float64 rounding, 1e-16) and the minimum angle next to the code's. The Thomson code is "
           "HUG's target under the energy measure; for K = 7, 8, 10, 11 its minimum angle is below the best "
           "packing (Tammes), which the maxgap measure targets")


def _run(out: Path, K: int, smoke: bool) -> Path:
    cfg = SimConfig(K=K, n=10, d=3, loss="hug", optimizer="lbfgs", dtype="float64", steps=60 if smoke else 300)
    return runs.simulate(out, f"K{K}", cfg)


def build(out: Path, smoke: bool) -> plt.Figure:
    shown = (4, 6) if smoke else (4, 6, 12)
    sweep = (4, 5, 6) if smoke else tuple(range(4, 13))
    dirs = {K: _run(out, K, smoke) for K in sorted(set(shown) | set(sweep))}
    fig = plt.figure(figsize=(13, 3.8), constrained_layout=True)
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 30), np.linspace(0, np.pi, 15))
    for i, K in enumerate(shown):
        ax = fig.add_subplot(1, len(shown) + 2, i + 1, projection="3d")
        ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.85", lw=0.4)
        P = normalize_rows(runs.params(dirs[K])["W"]).numpy()
        code, rms = align_configuration(P, spherical_code(K, 3).points)
        ax.scatter(*code.numpy().T, s=90, facecolors="none", edgecolors=THEORY["color"], linewidths=1.2,
                   depthshade=False, label="minimal-energy code (aligned)")
        ax.scatter(*P.T, color="C0", s=18, depthshade=False, label="learned proxies")
        gnc = runs.summary(dirs[K])["gnc"]
        ax.set_title(f"K = {K}: min angle {gnc['min_angle_W']:.2f}°\n(code {gnc['target']['min_angle_deg']:.2f}°; "
                     f"RMS to it {rms:.0e})", fontsize=7)
        if i == 0:
            ax.legend(fontsize=6, loc="lower left")
        ax.set_box_aspect((1, 1, 1))
        ax.set_axis_off()
    gncs = [runs.summary(dirs[K])["gnc"] for K in sweep]
    gap = fig.add_subplot(1, len(shown) + 2, len(shown) + 1)
    gap.plot(sweep, [max(abs(g["energy_rel_gap_W"]), 1e-16) for g in gncs], "o-", label="proxies")
    means_gap = [max(abs(g.get("energy_rel_gap_means", math.nan)), 1e-16) for g in gncs]
    gap.plot(sweep, means_gap, "s-", label="class means")
    gap.set(yscale="log", xlabel="K (d = 3)", ylabel="|E − E_code|/E_code (log, floor 1e-16)",
            title="Riesz energy gap to the code")
    gap.legend(fontsize=7)
    ang = fig.add_subplot(1, len(shown) + 2, len(shown) + 2)
    ang.plot(sweep, [g["target"]["min_angle_deg"] for g in gncs], label="minimal-energy code (Thomson, s = 1)",
             **THEORY)
    ang.plot(sweep, [g["min_angle_W"] for g in gncs], "o", label="learned proxies")
    ang.set(xlabel="K (d = 3)", ylabel="minimum pairwise angle (degrees)", title="minimum angle")
    ang.legend(fontsize=7, loc="lower left")
    fig.suptitle("HUG: generalized neural collapse to spherical codes (K > d + 1 = 4 has no simplex ETF)")
    return fig
