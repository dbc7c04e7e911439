"""What the command-line tools share: one-line usage errors (exit 2), number parsing with bounds, exit
codes, and the check that --out is a writable directory."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def number(kind: Callable[[str], float], lo: float | None = None, hi: float | None = None,
            lo_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo:g}, got {text}")
        if hi is not None and value >= hi:
            raise argparse.ArgumentTypeError(f"must be < {hi:g}, got {text}")
        return value
    return parse


def check_out_dir(parser: argparse.ArgumentParser, out: str | None) -> None:
    """--out must name a directory we can create and write in (checked before any work starts)."""
    if out is None:
        return
    if not out.strip():
        parser.error("--out must name a directory, got an empty string")
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")  # unique: torchrun's processes all check
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        parser.error(f"--out {out}: cannot write there ({e.strerror or e})")
