"""The run directory: config.json, history.csv, summary.json, each written atomically."""

from __future__ import annotations

import csv
import io
import math
import platform
import secrets
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from analysis.files import atomic_write, atomic_write_text, file_mode, json_safe, write_json
from ufm.errors import ConfigError

# the atomic writers live in analysis.files (analysis.measure writes with them too); imported from here as before
__all__ = ["RUN_FILES", "RunDirInUse", "atomic_write", "atomic_write_text", "claim_run_dir", "environment", "file_mode",
           "json_safe", "new_run_dir", "os_error_line", "read_history", "run_files", "write_csv", "write_json"]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """One header from the union of the rows' keys (in first-seen order), one line per row."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_history(run_dir: Path | str) -> list[dict[str, float]]:
    """A run's history.csv as one dict of floats per row (empty cells — a column a row lacks — are NaN)."""
    with (Path(run_dir) / "history.csv").open(encoding="utf-8") as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in r.items()} for r in csv.DictReader(f)]


def new_run_dir(root: Path | str = "runs", stem: str = "run") -> Path:
    """A fresh directory root/<date-time>-<stem>-<random>, created now."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        path = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}-{secrets.token_hex(2)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def environment() -> dict[str, str]:
    """Versions of what produced a run, for config.json."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("ufm", "torch", "numpy", "scipy", "sympy", "cvxpy", "scikit-learn", "mnist1d", "torchvision"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["argv"] = " ".join(sys.argv)
    return versions


# the files that make a directory a run directory (UFM runs, backbone runs): one of them present means a run
# was started there
RUN_FILES = ("config.json", "summary.json", "history.csv", "params.pt", "checkpoint.pt")


class RunDirInUse(ConfigError):
    """--out names a directory that already holds a run (and neither --overwrite nor --resume was given)."""


def run_files(path: Path | str) -> list[str]:
    """The run files present in `path` (none: it holds no run).
    >>> run_files("/nonexistent")
    []
    """
    path = Path(path)
    return [name for name in RUN_FILES if (path / name).exists()]


def claim_run_dir(path: Path | str, overwrite: bool = False, resume_flag: str | None = None) -> None:
    """Make `path` ready for a new run: refuse (RunDirInUse, a one-line message naming the flags) when it holds a
    started or finished run, unless `overwrite`, in which case the old run's files are removed first (only
    those: other files in the folder are the user's). `resume_flag`: the flag that continues such a run, named
    in the message where the tool has one."""
    path = Path(path)
    present = run_files(path)
    if not present:
        return
    if not overwrite:
        state = "a finished run" if "summary.json" in present else "a started run"
        how = f"{resume_flag} to continue it, " if resume_flag else ""
        raise RunDirInUse(f"--out {path} already holds {state} ({', '.join(present)}): pass {how}--overwrite to "
                          "replace it, or choose another --out")
    for name in present:
        (path / name).unlink()


def os_error_line(e: OSError) -> str:
    """One line for an OS error while writing results, naming the file (ENOSPC: "no space left on device").
    >>> import errno; os_error_line(OSError(errno.ENOSPC, "No space left on device", "runs/x/params.pt"))
    'cannot write runs/x/params.pt: no space left on device (nothing torn: files are written atomically)'
    """
    import errno

    what = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e)).lower()
    where = f" {e.filename}" if e.filename else ""
    return f"cannot write{where}: {what} (nothing torn: files are written atomically)"
