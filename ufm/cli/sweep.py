"""`python -m ufm.sweep`: run a grid of UFM configurations (batched where their shapes agree) on a local
process pool or Dask, restartable, into one results table (a thin layer over ufm.sweeps)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ufm.cli.common import (
    TENSORBOARD_HELP,
    HelpFormatter,
    OneLineParser,
    add_version_flag,
    check_out_dir,
    check_tensorboard_dir,
    interrupt_on_sigterm,
    number,
    report_to_stderr,
)
from ufm.errors import cli_text

PROG = "python -m ufm.sweep"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG, formatter_class=HelpFormatter,
        description="Expand a grid of UFM configurations, run them (configurations of the same shapes, loss and "
                    "steps as one batched program) on a local process pool or a Dask cluster, and collect one "
                    "tidy table OUT/results.csv plus every run's directory OUT/runs/ID. Restarting with the same "
                    "grid skips the finished runs; a failing configuration is recorded and the others go on.",
        epilog="Grid file (TOML): top-level keys are fixed settings, [grid] maps keys to lists, e.g.\n"
               "  steps = 2000\n  [grid]\n  K = [4, 10]\n  wd = [1e-4, 5e-4, 1e-3]\n  loss = ['ce', 'mse']\n"
               "Keys are the fields of ufm.config.SimConfig (as in summary.json's config) and wd (all blocks).")
    p.add_argument("spec", nargs="?", type=Path, default=None, help="grid file (.toml)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis on the command line (repeatable), e.g. --grid wd=1e-4,5e-4")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a fixed setting (repeatable), e.g. --set steps=2000 or --set hierarchy=balanced:2,5 "
                        "(not split at commas)")
    p.add_argument("--out", required=True, help="sweep directory (results.csv, runs/)")
    p.add_argument("--workers", type=number(int, 1), default=2, help="worker processes")
    p.add_argument("--batch-size", type=number(int, 1), default=64,
                   help="at most this many configurations per batched program")
    p.add_argument("--dask", default=None, metavar="ADDRESS|local",
                   help="run on Dask: a scheduler address (tcp://host:8786), or 'local' for a local cluster of "
                        "--workers processes (Slurm: start the cluster with dask-jobqueue and pass its address)")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help=TENSORBOARD_HELP.replace("into DIR", "into DIR/ID for each run computed now"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_version_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ufm.sweep`; the library's log records and warnings show as its own lines on stderr."""
    with report_to_stderr(PROG):
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ufm.sweeps.grid import GridError, check_disjoint, expand, parse_assignments, parse_settings, read_spec

    try:
        fixed, grid = read_spec(args.spec) if args.spec is not None else ({}, {})
        sets, axes = parse_settings(args.set), parse_assignments(args.grid)
        for source, extra in (("--set", sets), ("--grid", axes)):
            clash = sorted(set(extra) & (set(fixed) | set(grid)))
            if clash:
                raise GridError(f"{source} {', '.join(clash)}: already set by the grid file {args.spec}")
        fixed.update(sets)
        grid.update(axes)
        check_disjoint(fixed, grid)
        if not grid and args.spec is None:
            parser.error("give a grid file or at least one --grid KEY=V1,V2")
        cfgs = expand(fixed, grid)
    except GridError as e:
        parser.error(cli_text(e))
    check_out_dir(parser, args.out)
    check_tensorboard_dir(parser, args.tensorboard)
    if args.dask is not None:
        if args.dask != "local" and "://" not in args.dask and ":" not in args.dask:
            parser.error(f"--dask takes 'local' or a scheduler address like tcp://host:8786, got {args.dask!r}")
        try:
            import distributed  # noqa: F401
        except ImportError:
            parser.error("--dask needs dask.distributed: pip install 'dask[distributed]'")
    from ufm.output.rundir import os_error_line
    from ufm.sweeps.runner import run_sweep

    interrupt_on_sigterm()

    stats: dict[str, int] = {}
    try:
        rows = run_sweep(cfgs, Path(args.out), workers=args.workers, batch_size=args.batch_size, dask=args.dask,
                         progress=not args.quiet, stats=stats, tensorboard=args.tensorboard)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted: queued runs cancelled, {Path(args.out) / 'results.csv'} is current; run the same "
              "command again to finish the sweep (finished runs are kept)", file=sys.stderr)
        return 130
    except OSError as e:  # a full disk, an unwritable file
        print(f"{PROG}: error: {os_error_line(e) if e.filename else e}", file=sys.stderr)
        return 1
    except ValueError as e:  # e.g. a Dask scheduler that cannot be reached
        print(f"{PROG}: error: {cli_text(e)}", file=sys.stderr)
        return 1
    from ufm.sweeps.grid import config_id

    mine = {config_id(c) for c in cfgs}
    rows = [r for r in rows if r["id"] in mine]  # earlier grids' rows stay in the table, not in this verdict
    unfinished = [r for r in rows if r["status"] in ("failed", "pending", "interrupted")]
    counts = {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})}
    # who ran them: this sweep, another one writing into the same folder at the same time, an earlier one
    who = [f"{stats.get('ran', 0)} run now"] + [f"{stats[k]} {what}" for k, what in (
        ("elsewhere", "by another sweep in this folder"), ("before", "finished before")) if stats.get(k)]
    print(f"{len(rows)} configurations: " + ", ".join(f"{n} {s}" for s, n in counts.items())
          + f" ({', '.join(who)}); table: {Path(args.out) / 'results.csv'}", file=sys.stderr)
    return 1 if unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
