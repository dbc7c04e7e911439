"""--compare-ufm: run the UFM twin of a finished backbone run (same K, class counts, feature dimension,
loss and λ), put both into summary.json, and draw the comparison plot (backbone curves against epochs,
UFM curves against steps, closed-form targets as horizontal lines)."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

from ufm.backbone.config import TrainConfig
from ufm.backbone.interrupts import interrupts_deferred
from ufm.backbone.twin import estimate_twin, twin_config
from ufm.config import SimConfig
from ufm.errors import UFMWarning
from ufm.output.rundir import read_history, write_json
from ufm.output.summary import gaps

LOG = logging.getLogger(__name__)  # "ufm.backbone.compare"

COMPARED = ("nc1", "nc2", "nc3", "nc4", "accuracy", "ncc_accuracy", "angular_mean", "hier_nc2", "mistake_severity")
PANELS = (("nc1", "NC1 = tr(Σ_W Σ_B†)/K"), ("nc2", "NC2: class means vs simplex ETF"),
          ("nc3", "NC3: classifier vs class means"), ("nc4", "NC4: mismatch with nearest class mean"))


def compare_with_ufm(summary: dict, *, progress: bool = True, announce: bool = True) -> dict:
    """Run the twin into RUN/ufm, add summary["ufm"], the twin's theory target and the backbone's gap to
    it (NC and accuracy: a backbone's features are not free, so its norms and objective are not the
    UFM's), rewrite summary.json and draw RUN/comparison.png.

    With `announce`, one INFO record first on the "ufm" logger with the twin's size and an estimate of its time
    (estimate_twin, timed only where INFO records are shown: python -m ufm.train shows it as a line on stderr);
    with `progress`, the run's progress bar. A figure that cannot be drawn is a UFMWarning (summary["plot_error"]
    says why). RUN/ufm belongs to this backbone run: an earlier twin there is replaced. An interrupt (Ctrl-C,
    SIGTERM) during the twin ends with the backbone's summary.json at status "interrupted" (interrupted_during
    names the twin): --resume then finds the training done and runs the twin again."""
    from ufm.api import run
    from ufm.problem import resolve

    run_dir = Path(summary["run_dir"])
    sim: SimConfig = twin_config(TrainConfig.from_dict(summary["config"]), summary["config"]["counts"])
    try:
        problem = resolve(sim)
        if announce and LOG.isEnabledFor(logging.INFO):
            LOG.info("%s", estimate_twin(problem).line())
        twin = run(problem, run_dir / "ufm", progress=progress, overwrite=True).summary
    except KeyboardInterrupt:
        twin = None
    if twin is None or twin.get("status") == "interrupted":
        summary = {**summary, "status": "interrupted", "interrupted_during": "the UFM twin (--compare-ufm)",
                   "ufm": {"run_dir": str(run_dir / "ufm"), "status": "interrupted"}}
        return _write_summary(run_dir, summary)
    predicted = twin["theory"].get("predicted", {}) if twin["theory"].get("applies") else {}
    compared = {k: v for k, v in predicted.items() if k in COMPARED}
    gap, rel_gap = gaps(summary["final"], compared)
    summary = {**summary, "theory": twin["theory"], "gap": gap, "rel_gap": rel_gap}
    summary["ufm"] = {"run_dir": str(run_dir / "ufm"), "config": twin["config"], "final": twin["final"],
                      "steps": twin["steps"], "converged": twin["converged"], "status": twin["status"],
                      "certificate": twin.get("certificate")}
    summary["comparison"] = {k: {"backbone_train": summary["final"].get(k), "backbone_test": summary["test"].get(k),
                                 "ufm": twin["final"].get(k), "theory": predicted.get(k)}
                             for k in COMPARED if k in summary["final"]}
    if summary.get("layers", {}).get("dnc") is not None:  # an MLP tracked layer by layer: its deep-UFM twin too
        from ufm.backbone.layers import deep_twin_layers

        try:
            summary["layers"] = {**summary["layers"], "twin": deep_twin_layers(summary, run_dir, progress=progress)}
        except KeyboardInterrupt:
            summary = {**summary, "status": "interrupted", "interrupted_during": "the deep UFM twin (--track-layers)"}
            return _write_summary(run_dir, summary)
    try:
        summary["plot"] = str(plot_comparison(run_dir, summary))
    except (ValueError, RuntimeError, OSError) as e:  # a figure that cannot be drawn loses no numbers
        summary["plot"] = None
        summary["plot_error"] = str(e).splitlines()[0]
        warnings.warn(f"comparison.png not drawn: {summary['plot_error']}", UFMWarning, stacklevel=2)
    except KeyboardInterrupt:  # the numbers are all there; only the figure is missing
        summary.update(plot=None, status="interrupted", interrupted_during="drawing comparison.png")
    return _write_summary(run_dir, summary)


def _write_summary(run_dir: Path, summary: dict) -> dict:
    """summary.json with interrupts held back while it is written; one arriving then marks it "interrupted"
    (rewritten so) instead of escaping."""
    try:
        with interrupts_deferred():
            write_json(run_dir / "summary.json", {k: v for k, v in summary.items() if k != "rank"})
    except KeyboardInterrupt:
        summary = {**summary, "status": "interrupted"}
        summary.setdefault("interrupted_during", "writing summary.json")
        with interrupts_deferred():
            write_json(run_dir / "summary.json", {k: v for k, v in summary.items() if k != "rank"})
    return summary


def plot_comparison(run_dir: Path, summary: dict) -> Path:
    """comparison.png: per NC metric, the backbone's training (solid) and test (dotted) curves against
    epochs, the UFM twin's against its steps (top axis), and the theory value (dashed) where it is
    positive; a prediction of 0 is written in the legend (a log axis has no 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backbone, ufm = read_history(run_dir), read_history(run_dir / "ufm")
    predicted = summary["theory"].get("predicted", {}) if summary["theory"].get("applies") else {}
    cfg = TrainConfig.from_dict(summary["config"])
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6), constrained_layout=True)
    for ax, (key, title) in zip(axes, PANELS, strict=True):
        e = [r["epoch"] for r in backbone if math.isfinite(r.get(key, math.nan)) and r[key] > 0]
        ax.plot([max(x, 0.5) for x in e], [r[key] for r in backbone if r["epoch"] in e], "C0-o", ms=3,
                label=f"{cfg.arch}, training set")
        te = [r for r in backbone if math.isfinite(r.get(f"test_{key}", math.nan)) and r[f"test_{key}"] > 0]
        ax.plot([max(r["epoch"], 0.5) for r in te], [r[f"test_{key}"] for r in te], "C0:",
                label=f"{cfg.arch}, test set")
        top = ax.twiny()
        us = [r for r in ufm if math.isfinite(r.get(key, math.nan)) and r[key] > 0]
        top.plot([max(r["step"], 0.5) for r in us], [r[key] for r in us], "C1-", label="UFM twin")
        # log axes only where there is something positive to draw (none for NC2/NC3 when K > d + 1)
        if e or te:
            ax.set_xscale("log")
        if us:
            top.set_xscale("log")
        if e or te or us:
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, f"{key}: not measured\n(NaN or 0 throughout)", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_xticks([]), ax.set_yticks([]), top.set_xticks([])
        ax.set_xlabel("backbone epoch (log; epoch 0 drawn at 0.5)")
        top.set_xlabel("UFM step (log)", color="C1")
        p = predicted.get(key)
        handles = ax.get_legend_handles_labels()[0] + top.get_legend_handles_labels()[0]
        if p is not None and math.isfinite(p) and p > 0:
            handles.append(ax.axhline(p, color="k", ls="--", lw=1, label=f"theory {p:.3g}"))
        elif p is not None:
            handles.append(ax.plot([], [], " ", label=f"theory: {p:g} (off the log axis)")[0])
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(f"{key} (log)")
        ax.grid(True, which="major", alpha=0.3)
        if key == PANELS[0][0]:
            ax.legend(handles=handles, fontsize=7, loc="lower left")
        elif p is not None:
            ax.legend(handles=handles[-1:], fontsize=7, loc="lower left")
    fig.suptitle(f"{cfg.arch} on {cfg.dataset}, loss {cfg.loss.name}, λ = {cfg.wd:g} vs the UFM with the same K, "
                 f"counts, d and λ (theory: {summary['theory']['name']})", fontsize=10)
    path = run_dir / "comparison.png"
    tmp = path.with_name(".comparison.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
