"""Where a sweep runs: worker processes (a local pool), or the calling process where workers cannot run it.

Registered losses and checks (ufm.register_loss, ufm.register_check) travel with each task and are installed in
the worker (registry_of, install_registry). Worker processes cannot run a sweep from a plain script that calls
ufm.sweep outside an `if __name__ == "__main__":` block (every spawned worker would run the script again), nor
one whose registered loss or check a worker cannot load (a lambda, a function defined in a notebook or under the
main guard): start_pool says why, and the sweep runs in the calling process with one line saying so
(logging.getLogger("ufm")). Workers are started with "spawn", never "fork": a forked child of a process whose
OpenMP pool has run (torch on the CPU) hangs in its first parallel product (measured here: torch 2.13, 2 threads
per worker), and a forked child cannot use CUDA once the parent has.

Ctrl-C: the pool's workers interrupt the task running (its run ends "interrupted" with its summary, as a run of
ufm.simulate does) and return the queued ones unrun (Pool.stop)."""

from __future__ import annotations

import ast
import importlib
import io
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from ufm.config import SimConfig


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive the sweep (a SIGKILLed sweep left its workers running): on Linux the kernel
    sends it SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere a thread polls the parent's pid.
    `parent`: the sweep's pid, passed in, since a worker whose parent died while it was starting has already
    been adopted by another process."""
    if os.getppid() != parent:
        os._exit(1)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="ufm-parent-watch").start()


def limit_threads(threads: int, parent: int | None = None) -> None:
    """Each worker process computes with `threads` threads (workers × threads = the cores) and leaves
    Ctrl-C to the main process (a Dask worker's event loop must not die of it)."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _die_with_parent(parent)
    torch.set_num_threads(max(1, threads))


# a pool worker's state (set by _init_worker): the sweep's cancel event, and whether a task is running now
WORKER: dict[str, Any] = {"cancel": None, "running": False, "interrupted": False}


def _interrupt_the_task(signum, frame) -> None:
    """SIGINT in a pool worker (the sweep's Ctrl-C, forwarded or from the terminal): a KeyboardInterrupt in the task
    running now, once, so its run ends "interrupted" with its summary as a run of ufm.simulate does; ignored
    between tasks, where it would kill the worker."""
    if WORKER["running"] and not WORKER["interrupted"]:
        WORKER["interrupted"] = True
        raise KeyboardInterrupt


def _init_worker(threads: int, parent: int, cancel: Any) -> None:
    """The initializer of a local pool's worker: its threads, death with the sweep, Ctrl-C for the running task
    only, and the event that, once set, makes the tasks still queued return without running."""
    limit_threads(threads, parent)
    signal.signal(signal.SIGINT, _interrupt_the_task)
    WORKER["cancel"] = cancel


class _Module(NamedTuple):
    """A registered check that is a module, sent to the workers by its name."""

    name: str


def registry_of(cfgs: Sequence[SimConfig]) -> dict[str, list]:
    """What a worker process needs beyond the package itself: the registered losses that `cfgs` use (their
    register_loss arguments) and every registered check (ufm.register_check)."""
    import types

    from ufm.checks import builtin_checks, checks
    from ufm.losses.registry import BUILTIN_LOSSES, LOSSES

    losses = []
    for name in sorted({c.loss.name for c in cfgs} - set(BUILTIN_LOSSES)):
        e = LOSSES[name]
        losses.append({"name": name, "loss": e.per_sample, "convex": e.convex, "conjugate": e.conjugate,
                       "shift_invariant": e.shift_invariant, "description": e.description})
    builtin = {c.NAME for c in builtin_checks()}
    extra: list[Any] = []
    for check in checks():
        if check.NAME in builtin:
            continue
        name = getattr(check, "__name__", None)
        if isinstance(check, types.ModuleType) and name != "__main__" and sys.modules.get(name) is check:
            check = _Module(name)
        extra.append(check)
    return {"losses": losses, "checks": extra}


def install_registry(registry: dict | bytes | None) -> None:
    """Register in this (worker) process the losses and checks of `registry` (registry_of, or its pickle), each
    unless it is registered already."""
    if not registry:
        return
    if isinstance(registry, bytes):
        registry = pickle.loads(registry)
    from ufm.checks import checks, register_check
    from ufm.losses.registry import LOSSES, register_loss

    for entry in registry["losses"]:
        known = LOSSES.get(entry["name"])
        if known is None or known.per_sample is not entry["loss"] or known.conjugate is not entry["conjugate"]:
            register_loss(**entry, replace=True)
    present = {c.NAME: c for c in checks()}
    for check in registry["checks"]:
        obj = importlib.import_module(check.name) if isinstance(check, _Module) else check
        if present.get(obj.NAME) is not obj:
            register_check(obj)


def refuse_in_a_starting_worker() -> None:
    """A spawned worker process imports the main script before it works; a script that calls ufm.sweep outside an
    `if __name__ == "__main__":` block would start the whole sweep again in every worker. The parent runs such a
    sweep in-process (_pool_obstacle); should one get here all the same, it stops the worker, not the sweep."""
    import multiprocessing

    if multiprocessing.parent_process() is not None and getattr(multiprocessing.current_process(), "_inheriting",
                                                                 False):
        raise RuntimeError("ufm.sweep was called while a worker process was importing the main script: call it "
                           "under `if __name__ == \"__main__\":`")


def _main_test(test: ast.expr) -> bool | None:
    """True for `__name__ == "__main__"`, False for `__name__ != "__main__"` (either order), None otherwise."""
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Eq, ast.NotEq)):
        if {ast.unparse(test.left), ast.unparse(test.comparators[0])} == {"__name__", "'__main__'"}:
            return isinstance(test.ops[0], ast.Eq)
    return None


def guarded(source: str, line: int) -> bool:
    """Whether `line` of the module `source` lies in the body that runs only as the main program
    (`if __name__ == "__main__":`, or the else of `!=`). Example:
    >>> src = "import ufm\\nif __name__ == '__main__':\\n    ufm.sweep({}, 'out')\\nufm.sweep({}, 'out')\\n"
    >>> guarded(src, 3), guarded(src, 4)
    (True, False)
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and (eq := _main_test(node.test)) is not None:
            body = node.body if eq else node.orelse
            if body and body[0].lineno <= line <= body[-1].end_lineno:
                return True
    return False


def _main_reimported() -> tuple[bool, str | None]:
    """(whether a spawned worker imports the main module again — a script or `python -m module`; not a notebook,
    an interactive session, `python -c`, nor a package's __main__ — as multiprocessing.spawn decides; the path it
    would run, where it runs one by path)."""
    import multiprocessing.spawn

    data = multiprocessing.spawn.get_preparation_data("ufm-sweep")
    name, path = data.get("init_main_from_name"), data.get("init_main_from_path")
    if name is not None:
        return name != "__main__" and not name.endswith(".__main__"), None
    return path is not None and Path(path).stem != "ipython", path


def _unguarded_main() -> str | None:
    """The main script's name when this call comes from its top-level code outside an `if __name__ ==
    "__main__":` block (each spawned worker would run it again), else None."""
    main = sys.modules.get("__main__")
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals is vars(main)):
        frame = frame.f_back
    if frame is None:  # the main script is not running its top level now (a callback, a thread)
        return None
    path = Path(getattr(main, "__file__", None) or "the main script")
    try:
        if guarded(path.read_text(encoding="utf-8"), frame.f_lineno):
            return None
    except (OSError, SyntaxError, ValueError):  # cannot tell: as if unguarded
        pass
    return path.name


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


class _MainProbe(pickle.Pickler):
    """A pickler that notes what it pickles by reference to __main__ (a worker finds it only where the main module
    is imported again)."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)
        self.mains: list[str] = []

    def reducer_override(self, obj: Any) -> Any:
        if getattr(obj, "__module__", None) == "__main__":
            self.mains.append(str(getattr(obj, "__qualname__", type(obj).__qualname__)))
        return NotImplemented


def _pool_obstacle(registry: dict[str, list]) -> str | None:
    """Why a local process pool cannot run this sweep (None: it can, as far as this process can tell; the pool
    then loads the registry in a worker first, Pool.probe)."""
    reimported, path = _main_reimported()
    if reimported and path is not None and not Path(path).is_file():  # a script read from stdin
        return f"worker processes would run the main program from {path}, which is not a file"
    if reimported and (script := _unguarded_main()) is not None:
        return (f"{script} calls ufm.sweep outside an `if __name__ == \"__main__\":` block, so every worker process "
                "would run the script again (put the sweep under that line to use workers)")
    entries = [(f"loss {e['name']!r}", e) for e in registry["losses"]]
    entries += [(f"check {getattr(c, 'NAME', getattr(c, 'name', '?'))!r}", c) for c in registry["checks"]]
    for what, entry in entries:
        probe = _MainProbe()
        try:
            probe.dump(entry)
        except Exception as e:  # noqa: BLE001 - a lambda, a local function, an open file …
            return (f"the registered {what} cannot be sent to worker processes ({_first_line(e)}); define it at "
                    "the top level of a module to use workers")
        if probe.mains and not reimported:
            return (f"the registered {what} is defined in __main__ (a notebook or an interactive session), which "
                    "worker processes cannot import; define it in a module to use workers")
    return None


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while workers are started: they inherit that, so a Ctrl-C cannot kill one half-started (its
    initializer then installs _interrupt_the_task)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield  # (None: a handler installed outside Python, which could not be put back)
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Pool:
    """A local process pool ("spawn") whose workers run tasks with the registry installed, and whose Ctrl-C
    cancels the queued tasks and interrupts the running ones."""

    def __init__(self, workers: int, registry: bytes | None) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.cancel = ctx.Event()
        self.registry = registry
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                        initargs=(threads, os.getpid(), self.cancel))
        self.futures: dict[Future, list[int]] = {}
        self.started = False  # a worker answered the probe

    def probe(self) -> str | None:
        """Start a worker and load the registry there (if any): None, or why it cannot. Once a worker has answered,
        a pool that breaks later was broken by a task (a run that killed its worker), not by workers that cannot
        start: `run` then keeps such runs out of this process."""
        with _sigint_ignored():
            future = self.pool.submit(install_registry, self.registry)
        try:
            future.result()
        except BrokenProcessPool:
            return None  # workers that cannot start: `run` finds out and runs everything here
        except Exception as e:  # noqa: BLE001 - e.g. a function defined under the main guard, unknown to workers
            return (f"a worker process cannot load the registered losses and checks ({_first_line(e)}); define "
                    "them at the top level of a module")
        self.started = True
        return None

    def run(self, task_fn: Callable[..., list[dict]], sweep: Any, tasks: list[list[int]]) -> list[list[int]]:
        """Run `tasks` (task_fn(*sweep.args(task), registry) each; sweep.record(task, results) as each returns);
        return those to run in this process instead: all of them when the pool broke before any task came back
        (workers that cannot start), else the configurations a dead worker's broken pool never started (a run that
        had started — its config.json written — is recorded failed: it may be what killed the worker)."""
        with _sigint_ignored():
            self.futures = {self.pool.submit(task_fn, *sweep.args(t), self.registry): t for t in tasks}
        returned, lost, broken = 0, [], []
        for future in as_completed(self.futures):
            task = self.futures[future]
            try:
                results = future.result()
            except BrokenProcessPool as e:
                if returned == 0 and not self.started:
                    lost.append(task)
                    continue
                broken.append((task, f"{type(e).__name__}: {e}"))
                continue
            except Exception as e:  # noqa: BLE001 - a worker lost: its configurations are recorded as failed
                results = [{"status": "failed", "error": f"{type(e).__name__}: {e}", "ran": True}] * len(task)
            returned += 1
            sweep.record(task, results)
        for task, error in broken:
            done = [i for i in task if (sweep.run_dir(i) / "summary.json").exists()]  # ended before the break
            started = [i for i in task if i not in done and (sweep.run_dir(i) / "config.json").exists()]
            never = [i for i in task if i not in done and i not in started]
            if done:
                sweep.record(done, [{"status": "ok", "error": "", "ran": True}] * len(done))
            if started:  # the culprit, or a run the pool's shutdown killed beside it: a later sweep retries them
                why = (f"{error} (a worker process died while this run was in progress: this run, or one running "
                       "beside it, killed it; run the sweep again to retry it)")
                sweep.record(started, [{"status": "failed", "error": why, "ran": True}] * len(started))
            if never:
                lost.append(never)
        return lost

    def stop(self) -> None:
        """Ctrl-C: the queued tasks are cancelled (those already handed to a worker return at once), the running
        runs are interrupted (each ends "interrupted" with its summary), and this waits for them; a second Ctrl-C
        kills the workers."""
        self.cancel.set()
        for future in self.futures:
            future.cancel()
        # the pool's worker processes (a private attribute of ProcessPoolExecutor since Python 3.2; without it
        # the running runs finish instead of being interrupted)
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        for p in processes:
            try:
                os.kill(p.pid, signal.SIGINT)
            except (OSError, TypeError):
                pass
        try:
            self.pool.shutdown(wait=True, cancel_futures=True)
        except KeyboardInterrupt:
            for p in processes:
                p.kill()
            self.pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def start_pool(cfgs: Sequence[SimConfig], workers: int) -> tuple[Pool | None, str | None]:
    """(a local pool that can run `cfgs`, None), or (None, why worker processes cannot run them)."""
    registry = registry_of(cfgs)
    why = _pool_obstacle(registry)
    if why is not None:
        return None, why
    pool = Pool(workers, pickle.dumps(registry) if registry["losses"] or registry["checks"] else None)
    try:
        why = pool.probe()
    except BaseException:
        pool.close()
        raise
    if why is not None:
        pool.close()
        return None, why
    return pool, None
