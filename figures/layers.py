"""NC at every layer of a backbone run (`python -m ufm.train --track-layers`): against depth and against epoch.

    python -m figures layers RUN [--out FILE.png]      (also: python -m figures.layers RUN)

Top row, against depth (the tracked layers in forward order), at the first and the last measurement: the separation
fuzziness D_l = tr(Σ_W Σ_B⁺) with the fitted law log D_l = a − ρ·l (He & Su 2023), NC1 and its trace-ratio form, the
rank and orthogonality of the class means. Bottom row, against epoch, one line per layer: D_l, the trace ratio and
the nearest-class-center accuracy. Writes RUN/layers.png unless --out is given; a run without per-layer columns, or one
that cannot be read, is one line on stderr and exit status 2; the picture is written atomically.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from analysis.layers import separation_law
from figures import runs as run_files
from figures import style
from figures.history import BadRun, check_out, draw_and_report, read_run
from figures.style import plt
from ufm.cli.common import OneLineParser, add_version_flag

PROG = "python -m figures layers"


def layer_names(rows: list[dict[str, float]]) -> list[str]:
    """The tracked layers of a history, in forward order (the columns LAYER:nc1).
    >>> layer_names([{"epoch": 0, "layers.2:nc1": 1.0, "layers.4:nc1": 0.5, "nc1": 0.3}])
    ['layers.2', 'layers.4']
    """
    return [k[:-len(":nc1")] for k in rows[0] if k.endswith(":nc1")]


def _series(rows: list[dict], names: list[str], key: str, row: dict) -> list[float]:
    return [row.get(f"{n}:{key}", math.nan) for n in names]


def plot_layers(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Draw RUN's per-layer metrics into `out` (default RUN/layers.png), atomically; BadRun when the run has none.
    Example: `plot_layers("runs/mlp-digits")` after `python -m ufm.train --track-layers all --out runs/mlp-digits`."""
    run_dir = Path(run_dir)
    rows, summary = read_run_layers(run_dir)
    out = Path(out) if out is not None else run_dir / "layers.png"
    if (why := check_out(out)) is not None:
        raise BadRun(why)
    names = layer_names(rows)
    depth = list(range(1, len(names) + 1))
    style.apply()
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), constrained_layout=True)
    ends = [("first", rows[0], "--"), ("last", rows[-1], "-")]
    for label, row, ls in ends:
        epoch = row.get("epoch", math.nan)
        D = _series(rows, names, "separation", row)
        ax = axes[0, 0]
        line, = ax.plot(depth, D, "o" + ls, label=f"{label} (epoch {epoch:g})")
        if len(D) >= 2 and all(math.isfinite(v) and v > 0 for v in D):
            law = separation_law(D)
            ax.plot(depth, [math.exp(law.a - law.rho * l) for l in depth], ":", color=line.get_color(),
                    label=f"fit: ρ = {law.rho:.3g}, R² = {law.r2:.3f}")
        axes[0, 1].plot(depth, _series(rows, names, "nc1", row), "o" + ls, label=f"NC1, {label}")
        axes[0, 1].plot(depth, _series(rows, names, "nc1_trace", row), "s" + ls, alpha=0.6,
                        label=f"tr Σ_W / tr Σ_B, {label}")
        axes[0, 2].plot(depth, _series(rows, names, "orthogonality", row), "o" + ls, label=f"orthogonality, {label}")
    axes[0, 0].set(title="separation fuzziness D_l = tr(Σ_W Σ_B⁺)", yscale="log")
    axes[0, 1].set(title="NC1 by layer", yscale="log")
    axes[0, 2].set(title="max |cos| of the class means (0: orthogonal)")
    rank_ax = axes[0, 2].twinx()
    rank_ax.plot(depth, _series(rows, names, "rank_means", rows[-1]), "k^", label="rank of the means (last)")
    rank_ax.set_ylabel("rank of the centered class means")
    for ax in axes[0]:
        ax.set_xlabel("tracked layer (forward order)")
        ax.set_xticks(depth, names, rotation=30, fontsize=7)
        ax.legend(fontsize=7)
    epochs = [max(r.get("epoch", i), 0.5) for i, r in enumerate(rows)]
    for ax, key, title in zip(axes[1], ("separation", "nc1_trace", "ncc_accuracy"),
                              ("D_l against epoch", "tr Σ_W / tr Σ_B against epoch", "nearest-class-center accuracy"),
                              strict=True):
        for n in names:
            ax.plot(epochs, [r.get(f"{n}:{key}", math.nan) for r in rows], label=n)
        ax.set(title=title, xscale="log", xlabel="epoch (log scale; epoch 0 at 0.5)")
        if key != "ncc_accuracy":
            ax.set_yscale("log")
    axes[1, 0].legend(fontsize=7)
    cfg = summary.get("config", {}) if isinstance(summary.get("config"), dict) else {}
    fig.suptitle(f"NC at every layer: {cfg.get('arch', '?')} on {cfg.get('dataset', '?')}, loss {cfg.get('loss', '?')}",
                 fontsize=10)
    try:
        run_files.save(fig, out)
    finally:
        plt.close(fig)
    return out


def read_run_layers(run_dir: Path) -> tuple[list[dict[str, float]], dict]:
    """history.csv and summary.json of a backbone run with per-layer columns; BadRun otherwise."""
    try:
        rows, summary = read_run(run_dir)
    except BadRun as e:
        if "no 'step' column" not in str(e):
            raise
        rows, summary = _backbone_rows(run_dir)
    if not layer_names(rows):
        raise BadRun(f"{run_dir}/history.csv has no per-layer columns (LAYER:nc1): train with --track-layers")
    return rows, summary


def _backbone_rows(run_dir: Path) -> tuple[list[dict[str, float]], dict]:
    """A backbone's history has `epoch`, not `step`: read it as history.csv's rows with its summary."""
    import json

    from ufm.output.rundir import read_history

    rows = read_history(run_dir)
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    return rows, summary if isinstance(summary, dict) else {}


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run directory of python -m ufm.train --track-layers")
    p.add_argument("--out", type=Path, default=None,
                   help="output picture, its format from the suffix (default: RUN/layers.png)")
    add_version_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return draw_and_report(PROG, lambda: plot_layers(args.run, args.out))


if __name__ == "__main__":
    sys.exit(main())
