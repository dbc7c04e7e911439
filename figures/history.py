"""Training curves of UFM runs: NC1–NC4, loss and gradient norm against steps, theory as dashed lines.

    python -m figures.history runs/RUN [runs/OTHER ...] [--out FILE.png]

Reads history.csv and summary.json (optional) of each run directory; writes history.png into the (first)
run directory unless --out is given (a file name whose suffix is a picture format: .png, .pdf, .svg, …; its
folder must exist). A missing run directory, a history.csv or summary.json that cannot be read, or an --out
that cannot be written is one line on stderr and exit status 2; the picture is written atomically.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

from matplotlib.backend_bases import FigureCanvasBase

from figures import runs as run_files
from figures import style
from figures.style import plt
from ufm.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, OneLineParser, add_version_flag, probe_writable
from ufm.output.rundir import os_error_line, read_history

PROG = "python -m figures.history"

PANELS = [
    ("loss", "objective F", "relative gap to theory |F − F*|/F*"),
    ("nc1", "NC1 = tr(Σ_W Σ_B†)/K", None),
    ("nc2", "NC2 (means vs simplex ETF)", None),
    ("nc3", "NC3 (classifier vs means)", None),
    ("nc4", "NC4 (mismatch with nearest mean)", None),
    ("grad_norm", "gradient norm ‖∇F‖", None),
]


class BadRun(ValueError):
    """A run directory this script cannot draw: the message is the one line to print."""


def _number(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def read_run(run_dir: Path | str) -> tuple[list[dict[str, float]], dict]:
    """The rows of run_dir/history.csv and its summary.json (an empty dict when there is none); BadRun, naming
    the file, when either cannot be read or is not what a run writes."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadRun(f"run directory {run_dir} not found" if not run_dir.exists() else f"{run_dir} is not a directory")
    path = run_dir / "history.csv"
    if not path.is_file():
        raise BadRun(f"{path} not found (is {run_dir} a run directory?)")
    try:
        rows = read_history(run_dir)
    except (OSError, ValueError, csv.Error) as e:  # unreadable, not UTF-8, a cell that is not a number
        raise BadRun(f"cannot read {path}: {e}") from None
    except TypeError:  # csv.DictReader gathers the cells beyond the header into a list
        raise BadRun(f"cannot read {path}: a row has more cells than the header") from None
    if not rows:
        raise BadRun(f"{path} holds no rows (a run writes its first at step 0)")
    if "step" not in rows[0]:
        raise BadRun(f"cannot read {path}: no 'step' column (columns: {', '.join(rows[0])[:200]})")
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        return rows, {}
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON (truncated)
        raise BadRun(f"cannot read {summary_path}: {e}") from None
    if not isinstance(summary, dict):
        raise BadRun(f"cannot read {summary_path}: expected a JSON object, got {type(summary).__name__}")
    return rows, summary


def _label(run_dir: Path, summary: dict) -> str:
    cfg = summary.get("config")
    if not isinstance(cfg, dict) or not {"loss", "K", "wd_W"} <= cfg.keys() or _number(cfg["wd_W"]) is None:
        return run_dir.name
    return f"{cfg['loss']}, K={cfg['K']}, λ_W={_number(cfg['wd_W']):g}"


def _predicted(summary: dict) -> dict[str, float]:
    """The theory's finite predictions, where a target applies (NaN is written as null: left out)."""
    theory = summary.get("theory")
    if not isinstance(theory, dict) or not theory.get("applies") or not isinstance(theory.get("predicted"), dict):
        return {}
    return {k: v for k, x in theory["predicted"].items() if (v := _number(x)) is not None}


def plot_history(run_dirs: list[Path], out: Path) -> Path:
    """Draw the runs' curves into `out` (atomically). BadRun when a run cannot be read (then nothing is written)."""
    return _draw([(run_dir, *read_run(run_dir)) for run_dir in run_dirs], out)


def _draw(data: list[tuple[Path, list[dict[str, float]], dict]], out: Path) -> Path:
    style.apply()
    fig, axes = plt.subplots(2, 3, figsize=(11, 6), constrained_layout=True)
    for run_dir, rows, summary in data:
        label = _label(run_dir, summary)
        predicted = _predicted(summary)
        steps = [max(r["step"], 0.5) for r in rows]  # step 0 drawn at 0.5 on the log axis
        for ax, (key, title, gap_title) in zip(axes.flat, PANELS, strict=True):
            if key == "loss" and predicted.get("loss"):
                values = [abs(r.get("loss", math.nan) - predicted["loss"]) / abs(predicted["loss"]) for r in rows]
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
    try:
        run_files.save(fig, out)
    finally:
        plt.close(fig)
    return out


def check_out(out: Path) -> str | None:
    """Why the picture cannot be written to `out` (None: it can)."""
    formats = FigureCanvasBase.get_supported_filetypes()
    if out.is_dir():
        return f"--out {out} is a folder; give a file name such as {out / 'history.png'}"
    if out.suffix.lstrip(".").lower() not in formats:
        return (f"--out {out}: give a file name ending in a picture format matplotlib writes (.png, .pdf, .svg, …), "
                f"got {repr(out.suffix) if out.suffix else 'no suffix'}")
    folder = out.parent
    if not folder.is_dir():
        return f"--out {out}: folder {folder} {'is not a directory' if folder.exists() else 'does not exist'}"
    try:
        probe_writable(folder)
    except OSError as e:
        return f"--out {out}: cannot write in {folder} ({e.strerror or e})"
    return None


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run directories (with history.csv)")
    p.add_argument("--out", type=Path, default=None,
                   help="output picture, its format from the suffix (default: RUN/history.png)")
    add_version_flag(p)
    return p


def draw_and_report(prog: str, draw: Callable[[], Path]) -> int:
    """A figure command's ending: draw() returns the picture's path, printed on stdout (exit 0); BadRun is one line
    and exit 2, an OSError (a full disk) one line naming the file and exit 1, Ctrl-C one line and exit 130."""
    try:
        out = draw()
    except BadRun as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # a full disk: one line naming the file (nothing torn: the write is atomic)
        print(f"{prog}: error: {os_error_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or args.runs[0] / "history.png"

    def draw() -> Path:
        data = [(run, *read_run(run)) for run in args.runs]  # bad input first, before anything is drawn
        if (why := check_out(out)) is not None:
            raise BadRun(why)
        return _draw(data, out)

    return draw_and_report(PROG, draw)


if __name__ == "__main__":
    sys.exit(main())
