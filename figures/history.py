"""Training curves of UFM runs: NC1–NC4, loss and gradient norm against steps, theory as dashed lines.

    python -m figures.history runs/RUN [runs/OTHER ...] [--out FILE.png]

Reads history.csv and summary.json of each run directory; writes history.png into the (first) run
directory unless --out is given.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from figures import style
from figures.style import plt
from ufm.output.rundir import read_history

PANELS = [
    ("loss", "objective F", "relative gap to theory |F − F*|/F*"),
    ("nc1", "NC1 = tr(Σ_W Σ_B†)/K", None),
    ("nc2", "NC2 (means vs simplex ETF)", None),
    ("nc3", "NC3 (classifier vs means)", None),
    ("nc4", "NC4 (mismatch with nearest mean)", None),
    ("grad_norm", "gradient norm ‖∇F‖", None),
]


def read_run(run_dir: Path) -> tuple[list[dict[str, float]], dict]:
    rows = read_history(run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return rows, summary


def plot_history(run_dirs: list[Path], out: Path) -> Path:
    style.apply()
    fig, axes = plt.subplots(2, 3, figsize=(11, 6), constrained_layout=True)
    for run_dir in run_dirs:
        rows, summary = read_run(run_dir)
        cfg = summary.get("config", {})
        label = f"{run_dir.name}" if not cfg else f"{cfg['loss']}, K={cfg['K']}, λ_W={cfg['wd_W']:g}"
        predicted = summary.get("theory", {}).get("predicted", {}) if summary.get("theory", {}).get("applies") else {}
        steps = [max(r["step"], 0.5) for r in rows]  # step 0 drawn at 0.5 on the log axis
        for ax, (key, title, gap_title) in zip(axes.flat, PANELS, strict=True):
            if key == "loss" and "loss" in predicted:
                values = [abs(r["loss"] - predicted["loss"]) / abs(predicted["loss"]) for r in rows]
                ax.set_title(gap_title)
            else:
                values = [r.get(key, math.nan) for r in rows]
                ax.set_title(title)
            line, = ax.plot(steps, values, label=label)
            if key != "loss" and key in predicted and predicted[key] > 0:
                ax.axhline(predicted[key], color=line.get_color(), **{**style.THEORY, "color": line.get_color()})
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step (log scale; step 0 at 0.5)")
        ax.set_ylabel("value (log scale, dimensionless)")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("UFM training; dashed: nonzero theory targets (NC targets of balanced runs are 0, off the "
                 "log axis)", fontsize=10)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m figures.history", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run directories (with history.csv)")
    p.add_argument("--out", type=Path, default=None, help="output PNG (default: RUN/history.png)")
    args = p.parse_args(argv)
    for run in args.runs:
        if not (run / "history.csv").exists():
            print(f"python -m figures.history: error: {run}/history.csv not found", file=sys.stderr)
            return 2
    out = plot_history(args.runs, args.out or args.runs[0] / "history.png")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
