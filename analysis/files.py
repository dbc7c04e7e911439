"""Files written atomically (a temporary file in the same folder, fsync, then a rename: a reader, or a resumed run,
never sees a torn file), and JSON that holds NaN and ±inf as null. Shared by the run directories (ufm.output.rundir)
and the saved-feature measurements (analysis.measure)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _read_umask() -> int:
    umask = os.umask(0o022)  # reading the umask means setting it: done once, at import, before any thread
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def file_mode(path: Path) -> int:
    """The permission bits a file written at `path` should get: those of the file it replaces, else 0666 less the
    process umask (what open(path, "w") would give).
    >>> file_mode(Path("/nonexistent/x")) == 0o666 & ~_UMASK
    True
    """
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def atomic_write(path: Path | str, write: Callable[[IO], None], binary: bool = False) -> None:
    """Call write(f) on a temporary file in the same directory, fsync, then rename over `path`. An OSError names
    the file; torch.save's RuntimeError on a failed write (a full disk) becomes an OSError saying so.
    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write(p, lambda f: f.write("hi")); p.read_text()
    'hi'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600: give the file the mode a plain open() would (the existing file's, else 0666
        # less the umask), so colleagues can read shared runs; a mount that refuses chmod (SMB with noperm, some
        # FUSE file systems) keeps 0600 rather than failing every write (and leaking the descriptor)
        with contextlib.suppress(OSError):
            os.chmod(tmp, file_mode(path))
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    except RuntimeError as e:
        Path(tmp).unlink(missing_ok=True)
        if "unexpected pos" not in str(e) and "failed writing" not in str(e):
            raise
        # torch.save reports a failed write (e.g. a full disk) as a RuntimeError ("unexpected pos …"): say which
        # file, and that the disk may be full
        raise OSError(None, f"write failed ({e}); is the disk full?", str(path)) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    """`text` to `path`, atomically (atomic_write)."""
    atomic_write(path, lambda f: f.write(text))


def json_safe(x: Any) -> Any:
    """NaN and ±inf are not JSON: `x` with them as None (in dicts, lists and tuples too).
    >>> json_safe({"a": float("nan"), "b": [1.0, float("inf")]})
    {'a': None, 'b': [1.0, None]}
    """
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_json(path: Path | str, obj: Any) -> None:
    """`obj` as indented JSON (NaN and ±inf as null), atomically."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")
