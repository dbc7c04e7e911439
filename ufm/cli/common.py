"""What the command-line tools share: one-line usage errors (exit 2), number parsing with bounds, exit
codes, the check that --out is a writable directory, and the library's log records and warnings shown as the
tool's own lines on stderr (report_to_stderr)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not usage + message, and negative numbers in
    scientific notation (--wd -1e-4) are values, so the flag's own range check answers them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # argparse's own pattern knows -3 and -.5 but not -1e-4, which it then takes for an option
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """`--version`: print ufm.__version__ alone (the one place the version is written) and exit 0.

    >>> p = OneLineParser(prog="tool"); add_version_flag(p)
    >>> p.format_usage().strip()
    'usage: tool [-h] [--version]'
    """
    from ufm import __version__  # late: this module is imported while the package ufm is still initializing

    parser.add_argument("--version", action="version", version=__version__,
                        help="print the version of ufm and exit")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" once: not where the help text already states its default, nor for None or False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class HelpFormatter(DefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """DefaultsHelpFormatter, keeping the description's own line breaks (legends, examples)."""


def interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler's kill, `timeout`) ends a run the way Ctrl-C does: KeyboardInterrupt, so the run
    writes its summary with status "interrupted" and exits 130. SIGINT too, even where the shell started the
    tool with SIGINT ignored (a background job `cmd &` of a script): a deliberate `kill -INT` must stop it."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


class ToolLines(logging.Handler):
    """Log records as a command line's own lines on stderr: "PROG: warning: …" (the level's name, for WARNING and
    above), an INFO record as its message alone; written with tqdm.write, so an open progress bar is redrawn below
    the line, and to the sys.stderr of the moment (a test's capture included)."""

    def __init__(self, prog: str) -> None:
        super().__init__(logging.INFO)
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno < logging.WARNING else f"{self.prog}: {record.levelname.lower()}: {message}"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's own rule: a failing handler reports, never raises
            self.handleError(record)


@contextlib.contextmanager
def report_to_stderr(prog: str) -> Iterator[ToolLines]:
    """While a command line runs: the records of the "ufm" loggers (INFO and above) and the warnings of the
    project's category (ufm.errors.UFMWarning) appear on stderr as the tool's own lines (ToolLines); other
    warnings keep their usual form. Everything is put back on exit, so a caller of main() in the same process (a
    test, a notebook) keeps its own logging and warnings.
    >>> import contextlib, io, logging
    >>> err = io.StringIO()
    >>> with contextlib.redirect_stderr(err), report_to_stderr("python -m ufm.sweep"):
    ...     logging.getLogger("ufm.sweeps").warning("out/runs/x/summary.json: not a JSON object")
    >>> print(err.getvalue(), end="")
    python -m ufm.sweep: warning: out/runs/x/summary.json: not a JSON object
    """
    from ufm.errors import UFMWarning

    logger, handler = logging.getLogger("ufm"), ToolLines(prog)
    level, shown = logger.level, warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UFMWarning):
            handler.handle(logging.LogRecord("ufm", logging.WARNING, filename, lineno, str(message), None, None))
        else:
            shown(message, category, filename, lineno, file, line)

    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    warnings.showwarning = show
    try:
        yield handler
    finally:
        warnings.showwarning = shown
        logger.setLevel(level)
        logger.removeHandler(handler)


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
        if value == 0 and re.search(r"[1-9]", re.split(r"[eE]", text)[0]):
            # 1e-400 reads as 0.0: a weight decay meant to be tiny would silently become none
            raise argparse.ArgumentTypeError(f"{text} underflows to 0 (the smallest positive number is 5e-324): use "
                                             "0, or a larger value")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo:g}, got {text}")
        if hi is not None and value >= hi:
            raise argparse.ArgumentTypeError(f"must be < {hi:g}, got {text}")
        return value
    return parse


def memory_size(text: str) -> int:
    """An argparse type: a size in bytes ("512MiB", "2GB", "1e9"; analysis.blocked.parse_bytes).
    >>> memory_size("1MiB")
    1048576
    """
    from analysis.blocked import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def probe_writable(folder: Path | str) -> None:
    """Create and remove a uniquely named file in `folder` (unique: torchrun's processes all probe at once); the
    OSError says why the folder is not writable."""
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
    os.close(fd)
    os.unlink(probe)


TENSORBOARD_HELP = ("write TensorBoard scalars into DIR (every numeric history column at its step, then the summary's "
                    "final/* and gap/*; needs pip install 'ufm[tensorboard]')")


def check_tensorboard_dir(parser: argparse.ArgumentParser, logdir: str | None) -> None:
    """--tensorboard DIR: the package is installed and DIR is a directory we can write in, else one line, exit 2."""
    if logdir is None:
        return
    from ufm.output.tensorboard import TensorBoardUnavailable, require_tensorboard

    if not logdir.strip():
        parser.error("--tensorboard must name a directory, got an empty string")
    try:
        require_tensorboard("--tensorboard")
    except TensorBoardUnavailable as e:
        parser.error(str(e))
    try:
        Path(logdir).mkdir(parents=True, exist_ok=True)
        probe_writable(logdir)
    except OSError as e:
        parser.error(f"--tensorboard {logdir}: cannot write there ({e.strerror or e})")


def check_out_dir(parser: argparse.ArgumentParser, out: str | None) -> None:
    """--out must name a directory we can create and write in (checked before any work starts)."""
    if out is None:
        return
    if not out.strip():
        parser.error("--out must name a directory, got an empty string")
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        probe_writable(out)
    except OSError as e:
        parser.error(f"--out {out}: cannot write there ({e.strerror or e})")
