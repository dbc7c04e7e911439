"""Locks that let several sweeps share one folder: each run is claimed by one process at a time (OUT/runs/ID/.lock),
the record and results.csv are rewritten under one lock (OUT/.locks/table.lock), and each live sweep holds
OUT/.locks/sweep-HOST-PID-N.lock, so a second one can say that it is not alone.

The locks are the kernel's (fcntl.flock on POSIX, msvcrt.locking on Windows): the kernel drops them when their
process dies, however it dies, so a killed sweep never leaves a lock that blocks the next one; a lock file left
behind is simply locked again (and a dead sweep's presence file is removed by the next sweep that looks). On a
file system without locks they always succeed: one sweep at a time works there, two at once are not kept apart."""

from __future__ import annotations

import errno
import itertools
import os
import socket
import sys
import time
from pathlib import Path

if sys.platform == "win32":  # pragma: no cover - not exercised on the project's machines
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as e:  # a file system without locks: one sweep at a time works as it did without them
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return True
            raise
        return True

    def _unlock(fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise


class FileLock:
    """An exclusive lock on the file `path` (created if missing), held by this process until `release`, or until
    it dies. Two FileLocks on one path exclude each other within a process as well. Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.lock"
    >>> a, b = FileLock(path), FileLock(path)
    >>> a.acquire(), b.acquire(), a.release(), b.acquire()
    (True, False, None, True)
    >>> b.release()
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, blocking: bool = False, poll: float = 0.05) -> bool:
        """Take the lock; without `blocking`, return False at once when another holder has it. A blocking wait
        polls every `poll` seconds (Ctrl-C ends it with KeyboardInterrupt)."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this FileLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while not _try_lock(fd):
                if not blocking:
                    os.close(fd)
                    return False
                time.sleep(poll)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire(blocking=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def run_lock(run_dir: Path | str) -> FileLock:
    """The lock that claims one run directory (OUT/runs/ID/.lock; not a run file, so overwriting the run keeps it)."""
    return FileLock(Path(run_dir) / ".lock")


def table_lock(out: Path | str) -> FileLock:
    """The lock around reading and rewriting a sweep folder's record (sweep.json) and results.csv."""
    return FileLock(Path(out) / ".locks" / "table.lock")


_PRESENCE = itertools.count()


class Presence:
    """This sweep's presence in the folder `out` (a lock held while it runs) and the other live sweeps there.
    Example:
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> first = Presence(out)
    >>> first.others()
    []
    >>> second = Presence(out)
    >>> len(first.others()), len(second.others())
    (1, 1)
    >>> second.close(); first.close()
    """

    def __init__(self, out: Path | str) -> None:
        self.folder = Path(out) / ".locks"
        # a counter too: two sweeps of one process (threads) are two presences
        self.name = f"sweep-{socket.gethostname()}-{os.getpid()}-{next(_PRESENCE)}.lock"
        self.lock = FileLock(self.folder / self.name)
        self.lock.acquire(blocking=True)

    def others(self) -> list[str]:
        """The other live sweeps ("HOST-PID"); the files of dead ones are removed."""
        alive = []
        for path in sorted(self.folder.glob("sweep-*.lock")):
            if path.name == self.name:
                continue
            probe = FileLock(path)
            if probe.acquire():  # its sweep has died: the file is stale
                path.unlink(missing_ok=True)
                probe.release()
            else:
                alive.append(path.name[len("sweep-"):-len(".lock")].rsplit("-", 1)[0])
        return alive

    def close(self) -> None:
        self.lock.release()
        (self.folder / self.name).unlink(missing_ok=True)
