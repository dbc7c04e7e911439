"""Interrupts held back for the length of a small write: the record of a run (summary.json, history.csv) is
either written whole or not started, and a Ctrl-C (or SIGTERM under the command line) that arrives meanwhile
takes effect right after it, as it would have without the deferral."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM while the block runs, then deliver what arrived to the handler that was in place.

    Why not pthread_sigmask: it masks one thread, and a process with worker threads (torch's, tqdm's) has the
    kernel hand the signal to another one, after which CPython runs the Python handler in the main thread at the
    next bytecode, in the middle of the write. Replacing the Python-level handler defers it whichever thread
    receives it. Only Python handlers are deferred (a default SIGTERM still ends the process at once, like a
    SIGKILL, which the atomic writes survive), and only in the main thread (signal.signal works nowhere else:
    there the block simply runs undeferred).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {s: signal.getsignal(s) for s in DEFERRED}
    held = [s for s, h in previous.items() if callable(h)]
    for s in held:
        signal.signal(s, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for s in held:
            signal.signal(s, previous[s])
        if arrived:  # the first one counts: its handler raises (KeyboardInterrupt) as it would have
            previous[arrived[0]](arrived[0], None)
