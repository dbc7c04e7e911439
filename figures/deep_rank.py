"""Figure: deep neural collapse against the low-rank bias — the singular values of the class means at every
layer of a deep ReLU UFM that beats DNC (Súkeník, Lampert & Mondelli 2024), beside the deep linear UFM."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import runs
from figures.style import THEORY, plt
from ufm.config import SimConfig
from ufm.fit.measure import layer_singular_values

CAPTION = ("Deep neural collapse versus low rank: bias-free MSE, K = 4, L = 5, λ = 2e-3 (d = width = 8, float64 "
           "L-BFGS). Left: the singular values σ_i/σ_1 of the class means at every layer's input at the end; the deep "
           "linear UFM keeps all K equal (its optimum is collapsed onto an orthogonal frame), while the ReLU run, "
           "which ends below the best DNC configuration's objective, pushes its smallest singular value in "
           "layers 0 to 3 three to four orders below the largest (towards rank K − 1; dashed: the threshold 1e-6 "
           "of rank_layer{l}). Right: σ_K/σ_1 per layer during the ReLU run")


def _singular_values(run: Path, depth: int) -> list[np.ndarray]:
    last = runs.history(run)[-1]
    return [np.array(layer_singular_values(last, layer)) for layer in range(depth)]


def build(out: Path, smoke: bool) -> plt.Figure:
    K, depth, lam = 4, 5, 2e-3
    steps = 100 if smoke else 2000
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ranks_run = None
    for act, color in (("linear", "C0"), ("relu", "C3")):
        cfg = SimConfig(K=K, n=5, d=8, width=8, depth=depth, act=act, loss="mse", wd_W=lam, wd_H=lam, wd_M=lam,
                        optimizer="lbfgs", dtype="float64", steps=steps, certificate=False)
        run = runs.simulate(out, act, cfg)
        s = runs.summary(run)
        gap = s.get("dnc", {}).get("rel_gap")
        label = f"{act}" + (f" (objective {gap:+.1%} vs DNC)" if gap is not None else " (deep linear optimum)")
        for layer, sv in enumerate(_singular_values(run, depth)):
            ratio = np.maximum(sv / sv[0], 1e-8) if sv.size and sv[0] > 0 else np.full(K, 1e-8)
            x = layer + (-0.12 if act == "linear" else 0.12) + np.zeros(len(ratio))
            left.scatter(x, ratio, color=color, s=22, label=label if layer == 0 else None)
        if act == "relu":
            ranks_run = run
    left.axhline(1e-6, **THEORY)
    left.set(yscale="log", xlabel="layer l (input of layer l; 0 = the features H)", ylabel="σ_i / σ_1 (log)",
             title="class-mean singular values at the end", xticks=range(depth), ylim=(1e-8, 3))
    left.legend(fontsize=7)
    history = runs.history(ranks_run)
    steps_seen = [row["step"] for row in history]
    for layer in range(depth):
        ratio = [row[f"sv{K}_layer{layer}"] / row[f"sv1_layer{layer}"] if row[f"sv1_layer{layer}"] > 0 else np.nan
                 for row in history]
        right.plot(*runs.positive(steps_seen, ratio), label=f"layer {layer}")
    right.axhline(1e-6, **THEORY)
    right.set(xscale="symlog", yscale="log", xlabel="L-BFGS step", ylabel=f"σ_{K} / σ_1 (log)",
              title="ReLU run: the smallest class-mean singular value", xlim=(0, None))
    right.legend(fontsize=7)
    fig.suptitle("Deep neural collapse versus the low-rank bias (deep UFM, MSE)")
    return fig
