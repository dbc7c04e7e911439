"""Figure 7: hierarchical losses — NC metrics and mistake severity under HXE (α) and soft labels (β)."""

from __future__ import annotations

from pathlib import Path

from figures import runs
from figures.style import plt
from ufm.backbone.config import TrainConfig
from ufm.losses import LossConfig

CAPTION = ("An MLP on a tree-structured Gaussian mixture (12 classes, tree balanced:2,2,3, noise of the size of the "
           "class separation) trained with HXE over α and with soft labels over β, against CE (dotted): test "
           "accuracy, test mistake severity (mean LCA height of the mistakes), NC1 and the hierarchy-aware NC2 of "
           "the training features (60 epochs, one seed). Soft labels with small β make the mistakes milder than "
           "CE's at the cost of collapse (higher NC1) and, at β = 2, of accuracy; HXE with large α is worse than CE "
           "on every count here")

PANELS = (("test", "accuracy", "top-1 accuracy (test set)", "fraction correct"),
          ("test", "mistake_severity", "mistake severity (test set)", "mean LCA height of mistakes (levels)"),
          ("final", "nc1", "NC1 (training set)", "NC1 (linear, dimensionless)"),
          ("final", "hier_nc2", "hierarchy-aware NC2 (training set)", "distance to S (dimensionless)"))


def build(out: Path, smoke: bool) -> plt.Figure:
    base = dict(dataset="synthetic-hier", noise=3.0, separation=3.0, per_class=20 if smoke else 100,
                test_per_class=20 if smoke else 200, epochs=3 if smoke else 60, mlp_width=32 if smoke else 256)
    alphas, betas = ((0.5,), (5.0,)) if smoke else ((0.1, 0.5, 1.0, 2.0), (2.0, 5.0, 10.0, 30.0))
    ce = runs.summary(runs.train(out, "ce", TrainConfig(loss="ce", **base)))
    hxe = [runs.summary(runs.train(out, f"hxe{a:g}", TrainConfig(loss=LossConfig("hxe", alpha=a), **base)))
           for a in alphas]
    soft = [runs.summary(runs.train(out, f"soft{b:g}", TrainConfig(loss=LossConfig("soft", beta=b), **base)))
            for b in betas]
    fig, axes = plt.subplots(2, 4, figsize=(13, 5.6), constrained_layout=True)
    for row, (name, values, results) in enumerate((("HXE", alphas, hxe), ("soft labels", betas, soft))):
        for ax, (block, key, title, ylabel) in zip(axes[row], PANELS, strict=True):
            ax.plot(values, [r[block].get(key) for r in results], "o-", label=name)
            ax.axhline(ce[block][key], color="C1", ls=":", label="cross-entropy (measured)")
            ax.set(xscale="log", title=title, ylabel=ylabel,
                   xlabel="α: edge weights exp(−α·height) (log)" if row == 0 else "β: targets softmax(−β·d) (log)")
            ax.set_xticks(values, [f"{v:g}" for v in values], minor=False)
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        axes[row][0].legend(fontsize=7)
    fig.suptitle("Hierarchical losses on a real network: accuracy, mistake severity and collapse")
    return fig
