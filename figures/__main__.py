"""`python -m figures [NAME …] [--smoke]`: regenerate the figures from scratch (every run they draw is made
anew), each as NAME.png and NAME.pdf next to its script; --smoke runs each at toy sizes in seconds (CI)
and writes into --out (a temporary folder by default), leaving the committed pictures alone."""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

from figures import style

# name → module (one short script per figure), in the order of the README's gallery
FIGURES = ("nc_curves", "weight_decay", "sqi", "closed_forms", "minority", "haframe", "hierarchical_losses", "hug",
           "deep_rank")
HERE = Path(__file__).resolve().parent


def make(name: str, out: Path, runs: Path, smoke: bool) -> list[Path]:
    """Build one figure (its runs go under runs/name) and write out/name.png and .pdf."""
    module = importlib.import_module(f"figures.{name}")
    style.apply()
    (runs / name).mkdir(parents=True, exist_ok=True)
    fig = module.build(runs / name, smoke)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        fig.savefig(tmp)
        tmp.replace(path)
    style.plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m figures", description=__doc__)
    p.add_argument("names", nargs="*", metavar="NAME", help=f"figures to make (default: all): {', '.join(FIGURES)}")
    p.add_argument("--smoke", action="store_true", help="toy sizes, seconds per figure (for CI)")
    p.add_argument("--out", type=Path, default=None,
                   help="where the pictures go (default: next to the scripts; with --smoke a temporary folder)")
    p.add_argument("--runs", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in FIGURES]
    if unknown:
        p.exit(2, f"python -m figures: error: unknown figure {', '.join(unknown)}; choose from {', '.join(FIGURES)}\n")
    names = args.names or list(FIGURES)
    with tempfile.TemporaryDirectory(prefix="ufm-figures-") as tmp:
        out = args.out or (Path(tmp) / "out" if args.smoke else HERE)
        runs = args.runs or Path(tmp) / "runs"
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        for name in names:
            t0 = time.perf_counter()
            paths = make(name, out, runs, args.smoke)
            print(f"{name:<20} {time.perf_counter() - t0:7.1f} s  {paths[0]}", flush=True)
        print(f"{'total':<20} {time.perf_counter() - start:7.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
