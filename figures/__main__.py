"""`python -m figures [NAME …] [--smoke] [--out DIR] [--runs DIR]`: regenerate the figures from scratch (every
run they draw is made anew), each as NAME.png and NAME.pdf next to its script, or in --out.

--smoke runs each at toy sizes in seconds (CI) and leaves the committed pictures alone: with --out the toy
pictures are kept there, without it they are drawn in a temporary folder and discarded (a check that every
figure script runs). Bad input (an --out or --runs that is a file, looks like a file name, or cannot be
written) is one line on stderr and exit status 2; a failed write of a picture is one line naming it, exit 1."""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
from pathlib import Path

from figures import runs as run_files
from figures import style
from ufm.cli.common import EXIT_INTERRUPTED, OneLineParser, add_version_flag, probe_writable
from ufm.output.rundir import os_error_line

PROG = "python -m figures"
# name → module (one short script per figure), in the order of the README's gallery
FIGURES = ("nc_curves", "weight_decay", "sqi", "closed_forms", "minority", "haframe", "hierarchical_losses", "hug",
           "deep_rank")
HERE = Path(__file__).resolve().parent
# an --out or --runs ending in one of these names a picture, not the folder the pictures go into
FILE_SUFFIXES = (".png", ".pdf", ".svg", ".svgz", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp", ".gif")


def make(name: str, out: Path, runs: Path, smoke: bool) -> list[Path]:
    """Build one figure (its runs go under runs/name) and write out/name.png and .pdf (atomically)."""
    module = importlib.import_module(f"figures.{name}")
    style.apply()
    (runs / name).mkdir(parents=True, exist_ok=True)
    fig = module.build(runs / name, smoke)
    try:
        return [run_files.save(fig, out / f"{name}.{ext}") for ext in ("png", "pdf")]
    finally:
        style.plt.close(fig)


def check_dir(flag: str, text: str) -> str | None:
    """Why `text` cannot serve as the folder of `flag` (None: it can, and it exists now). Missing folders are
    created, parents included (as --out of python -m ufm.simulate)."""
    if not text.strip():
        return f"{flag} must name a folder, got an empty string"
    path = Path(text)
    what = {"--out": "the figures are written into it as NAME.png and NAME.pdf",
            "--runs": "each figure's runs are kept in a sub-folder NAME"}[flag]
    if path.exists() and not path.is_dir():
        return f"{flag} {path}: exists and is not a folder ({flag} takes a folder: {what})"
    if not path.exists() and path.suffix.lower() in FILE_SUFFIXES:
        return f"{flag} {path}: looks like a file name ({flag} takes a folder: {what})"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe_writable(path)
    except OSError as e:
        return f"{flag} {path}: cannot write there ({e.strerror or e})"
    return None


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=PROG, description="Regenerate the figures from scratch (every run they draw is made "
                      "anew), each as NAME.png and NAME.pdf next to its script, or in --out.")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"figures to make (default: all): {', '.join(FIGURES)}. "
                   "`python -m figures layers RUN` instead draws one backbone run's NC at every layer "
                   "(python -m ufm.train --track-layers)")
    p.add_argument("--smoke", action="store_true",
                   help="toy sizes, seconds per figure (for CI); the pictures are kept only with --out")
    p.add_argument("--out", default=None,
                   help="folder the pictures go into (default: next to the scripts; with --smoke none: drawn and "
                        "discarded)")
    p.add_argument("--runs", default=None,
                   help="keep the runs in this folder (default: a temporary folder, deleted at the end)")
    add_version_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["layers"]:  # `python -m figures layers RUN`: one run's NC at every layer (figures.layers)
        from figures.layers import main as layers_main

        return layers_main(argv[1:])
    p = build_parser()
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in FIGURES]
    if unknown:
        p.error(f"unknown figure {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    for flag, text in (("--out", args.out), ("--runs", args.runs)):
        if text is not None and (why := check_dir(flag, text)) is not None:
            p.error(why)
    names = args.names or list(FIGURES)
    keep = args.out is not None or not args.smoke  # smoke pictures without --out go to a folder deleted below
    with tempfile.TemporaryDirectory(prefix="ufm-figures-") as tmp:
        out = Path(args.out) if args.out is not None else Path(tmp) / "out" if args.smoke else HERE
        runs = Path(args.runs) if args.runs is not None else Path(tmp) / "runs"
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        name = names[0]
        try:
            for name in names:
                t0 = time.perf_counter()
                paths = make(name, out, runs, args.smoke)
                where = "  ".join(str(path) for path in paths) if keep else "drawn (not kept)"
                print(f"{name:<20} {time.perf_counter() - t0:7.1f} s  {where}", flush=True)
        except OSError as e:  # a full disk, a folder made read-only meanwhile: one line naming the file
            print(f"{PROG}: error: {name}: {os_error_line(e)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted while drawing {name}", file=sys.stderr)
            return EXIT_INTERRUPTED
        total = f"{'total':<20} {time.perf_counter() - start:7.1f} s"
        if not keep:
            total += "  (smoke pictures discarded with their temporary folder; --out DIR keeps them)"
        print(total, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
