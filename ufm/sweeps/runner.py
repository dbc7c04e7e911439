"""Running a sweep: configurations grouped into batches (one batch_key, at most --batch-size each), each
batch a task run in this process (workers=1), on a local process pool or on Dask, every run written to
OUT/runs/ID, and one tidy table OUT/results.csv rebuilt from the runs on disk. A run counts as finished
once its summary.json exists, so a killed sweep restarted with the same grid skips it; a configuration
that fails is recorded with its error (OUT/runs/ID/error.txt and the table) and does not stop the others.

Several sweeps may write into one folder at once: each run is claimed by one process at a time (a lock,
ufm.sweeps.locks), a run finished by another sweep is not run again, and the record of every grid swept into the
folder (sweep.json) and results.csv are rewritten under one lock, so the table lists every grid's runs.

Where the tasks run (a local pool, or this process where worker processes cannot run them): ufm.sweeps.workers.

What a sweep has to say (another sweep in the folder, a run whose summary is unusable and is run again, grids
merged, runs done here instead of on workers) is one WARNING record each on the logger of this module, a child of
"ufm"; python -m ufm.sweep shows them as "python -m ufm.sweep: warning: …" lines."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, as_completed
from pathlib import Path
from typing import Any

from ufm.config import SimConfig
from ufm.output.rundir import atomic_write_text, write_csv
from ufm.sweeps.grid import config_id
from ufm.sweeps.locks import Presence, run_lock, table_lock
from ufm.sweeps.workers import (
    WORKER,
    Pool,
    install_registry,
    limit_threads,
    refuse_in_a_starting_worker,
    registry_of,
    start_pool,
)

LOG = logging.getLogger(__name__)  # "ufm.sweeps.runner": the command line shows its records

FINAL_COLUMNS = ("loss", "data_loss", "accuracy", "nc1", "nc2", "nc3", "nc4", "W_norm_sq", "H_norm_sq", "grad_norm")
RENAMED = {"loss": "objective"}  # the table's "loss" column is the loss function's name
CONFIG_COLUMNS = ("K", "n", "d", "loss", "wd_W", "wd_H", "wd_b", "bias", "lr", "steps", "optimizer", "seed",
                  "dtype", "init_scale", "depth", "imbalance", "minority", "hierarchy")

SUMMARY_KEYS = {"status": str, "final": dict, "theory": dict, "converged": bool}


def read_summary(run: Path, warn: Callable[[str], None] | None = None) -> dict | None:
    """A run's summary.json, or None when it is missing or unusable (truncated, binary, not an object, lacking
    status/final/theory/converged): such a run is treated as unfinished and rerun; `warn` gets one line naming
    the file."""
    path = Path(run) / "summary.json"
    if not path.exists():
        return None
    try:
        s = json.loads(path.read_text(encoding="utf-8"))
        bad = ("not a JSON object" if not isinstance(s, dict) else
               next((f"no {k!r}" for k, kind in SUMMARY_KEYS.items() if not isinstance(s.get(k), kind)), None))
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        bad = f"unreadable ({e})"
    if bad is None:
        return s
    if warn is not None:
        warn(f"{path}: {bad}; the run is treated as unfinished and run again")
    return None


def finished(run: Path, warn: Callable[[str], None] | None = None) -> bool:
    """A run is finished once its summary.json is usable (`read_summary`) with a final status (not
    "interrupted")."""
    s = read_summary(run, warn)
    return s is not None and s["status"] != "interrupted"


def _result(status: str, error: str = "", ran: bool = False) -> dict:
    return {"status": status, "error": error, "ran": ran}


def run_task(configs: list[dict], outs: list[str], registry: dict | bytes | None = None,
             tensorboard: str | None = None) -> list[dict]:
    """One task: its configurations as a batch when there are several (falling back to one by one if the
    batch fails), each alone otherwise. Each run directory is claimed first (OUT/runs/ID/.lock): one that another
    process holds is left to it ("busy"), and one that another sweep finished meanwhile is not run again. A task
    of a cancelled sweep returns at once ("cancelled"), and after an interrupted run the rest of the task is
    cancelled. `registry`: the registered losses and checks to install first (registry_of). Returns one
    {"status", "error", "ran"} per configuration ("ran": computed by this call); never raises for a
    configuration's failure. `tensorboard`: a directory; each run computed writes its TensorBoard scalars into
    tensorboard/ID (ID: its run directory's name)."""
    WORKER["running"], WORKER["interrupted"] = True, False
    try:
        cancel = WORKER["cancel"]
        if cancel is not None and cancel.is_set():
            return [_result("cancelled")] * len(configs)
        install_registry(registry)
        locks = [run_lock(out) for out in outs]
        try:
            results: list[dict | None] = [None] * len(configs)
            mine = []
            for i, (lock, out) in enumerate(zip(locks, outs, strict=True)):
                if not lock.acquire():
                    results[i] = _result("busy")
                elif finished(Path(out)):  # finished by another sweep since this one looked
                    results[i] = _result(read_summary(Path(out))["status"])
                else:
                    mine.append(i)
            if mine:
                claimed = _run_claimed([configs[i] for i in mine], [outs[i] for i in mine], tensorboard)
                for i, r in zip(mine, claimed, strict=True):
                    results[i] = r
            return results  # type: ignore[return-value]
        finally:
            for lock in locks:
                lock.release()
    finally:
        WORKER["running"] = False


def _run_claimed(configs: list[dict], outs: list[str], tensorboard: str | None = None) -> list[dict]:
    import torch

    from ufm.api import run, run_batch

    cfgs = [SimConfig.from_dict(c) for c in configs]
    for out in outs:
        (Path(out) / "error.txt").unlink(missing_ok=True)  # a new attempt: an old failure no longer applies
    threads = torch.get_num_threads()  # a worker's share of the cores (set by limit_threads)
    logs = None if tensorboard is None else [Path(tensorboard) / Path(o).name for o in outs]
    if len(cfgs) > 1:
        try:  # the sweep owns these folders
            results = run_batch(cfgs, [Path(o) for o in outs], overwrite=True, threads=threads, tensorboard=logs)
            return [_result(r.status, ran=True) for r in results]
        except Exception:  # noqa: BLE001 - one bad configuration must not cost the batch: run them alone
            pass
    results = []
    for j, (cfg, out) in enumerate(zip(cfgs, outs, strict=True)):
        if results and results[-1]["status"] == "interrupted":  # Ctrl-C: the rest of the task is not started
            results.append(_result("cancelled"))
            continue
        if finished(Path(out)):  # the batch got this far before it failed
            results.append(_result(read_summary(Path(out))["status"], ran=True))
            continue
        try:
            result = run(cfg, Path(out), progress=False, overwrite=True, threads=threads,
                         tensorboard=None if logs is None else logs[j])
            results.append(_result(result.status, ran=True))
        except Exception as e:  # noqa: BLE001 - recorded with its error, the others go on
            Path(out).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(out) / "error.txt", traceback.format_exc())
            results.append(_result("failed", f"{type(e).__name__}: {e}", ran=True))
    return results


def plan(cfgs: Sequence[SimConfig], batch_size: int) -> list[list[int]]:
    """Indices of `cfgs` grouped into tasks: same batch_key, at most batch_size per task (in grid order)."""
    from ufm.fit.steppers import batch_key

    groups: dict[Any, list[int]] = {}
    singles: list[list[int]] = []
    for i, cfg in enumerate(cfgs):
        key = batch_key(cfg)
        if key is None:
            singles.append([i])
        else:
            groups.setdefault(key, []).append(i)
    tasks = [members[j:j + batch_size] for members in groups.values() for j in range(0, len(members), batch_size)]
    return sorted(tasks + singles)


def row_of(cfg: SimConfig, run: Path) -> dict[str, Any]:
    """One line of the results table: id, status, error, the configuration's settings, the final metrics
    and the theory target with its gaps (no timings: the table of a sweep does not depend on where it ran)."""
    return _row(config_id(cfg), cfg.to_dict(), run)


def _row(run_id: str, settings: dict[str, Any], run: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"id": run_id, "status": "pending", "error": ""}
    row.update({k: settings.get(k) for k in CONFIG_COLUMNS})
    s = read_summary(run)
    if s is not None:  # finished or interrupted: its numbers so far
        row["status"] = s["status"]
        row.update({RENAMED.get(k, k): s["final"].get(k) for k in FINAL_COLUMNS})
        row["theory"] = s["theory"].get("name", "") if s["theory"].get("applies") else ""
        row.update({f"rel_gap_{RENAMED.get(k, k)}": v for k, v in s.get("rel_gap", {}).items() if k in FINAL_COLUMNS})
        row["converged"] = s["converged"]
    if row["status"] in ("pending", "interrupted") and (run / "error.txt").exists():
        row["status"] = "failed"
        lines = [x for x in (run / "error.txt").read_text().strip().splitlines() if x.strip()]
        row["error"] = lines[-1] if lines else "failed"
    return {k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


RECORD = "sweep.json"  # every configuration ever swept into this folder: results.csv lists them all


def _read_record(out: Path, warn: Callable[[str], None] | None = None) -> dict[str, dict]:
    """id → settings of the configurations recorded in out/sweep.json, in their order ({} without one)."""
    path = out / RECORD
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        configs = record["configs"]
        ids = record.get("ids")
        if not isinstance(ids, list) or len(ids) != len(configs):  # a record from before the ids were kept
            ids = [config_id(SimConfig.from_dict(c)) for c in configs]
        return dict(zip(ids, configs, strict=True))
    except (OSError, ValueError, KeyError, TypeError) as e:
        if warn is not None:
            warn(f"{path}: cannot read the earlier configurations ({e}); results.csv lists this grid and the runs "
                 f"found in {out / 'runs'}")
        return {}


def _runs_on_disk(out: Path, known: dict[str, dict]) -> dict[str, dict]:
    """id → settings (its config.json) of every run directory in out/runs that `known` lacks."""
    found = {}
    try:
        entries = sorted(e.name for e in os.scandir(out / "runs") if e.is_dir())
    except FileNotFoundError:
        return {}
    for name in entries:
        if name in known:
            continue
        try:
            settings = json.loads((out / "runs" / name / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # not started (a claim only), or not a run
            continue
        if isinstance(settings, dict):
            found[name] = settings
    return found


def merge_record(out: Path, cfgs: Sequence[SimConfig], warn: Callable[[str], None]) -> None:
    """Add `cfgs` to the record of this sweep folder (out/sweep.json: the configurations of every grid swept into
    it, each once; in a folder from before the record, those of the runs' config.json). A second grid in the same
    --out is merged, never a reason to drop the first one's rows from results.csv. Call it under table_lock(out)."""
    earlier = _read_record(out, warn)
    if not earlier:
        earlier = _runs_on_disk(out, {})
    new = {config_id(c): c.to_dict() for c in cfgs}
    if earlier and any(i not in earlier for i in new):
        warn(f"{out}: merging this grid ({len(cfgs)} configurations) with {len(earlier)} of earlier grids; "
             "results.csv lists all of them")
    merged = {**earlier, **new}
    atomic_write_text(out / RECORD, json.dumps({"configs": list(merged.values()), "ids": list(merged)}, indent=1))


def rebuild_table(out: Path) -> list[dict]:
    """Rewrite out/results.csv, under the folder's lock, from what is on disk: one row for every recorded
    configuration of every grid swept into the folder (sweep.json) and for every other run in out/runs; return
    its rows."""
    with table_lock(out):
        table = _read_record(out)
        table.update(_runs_on_disk(out, table))
        rows = [_row(i, settings, out / "runs" / i) for i, settings in table.items()]
        write_csv(out / "results.csv", rows)
    return rows


def make_executor(workers: int, dask: str | None) -> tuple[Executor, Callable[[], None]]:
    """(executor, close) for Dask — `dask="local"` starts a local cluster of `workers` single-threaded worker
    processes, any other value is a scheduler address. (The local process pool is made by Pool.)"""
    from distributed import Client, LocalCluster

    if dask == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)

        def close() -> None:
            client.close()
            cluster.close()
    else:
        client = Client(dask)
        close = client.close
    client.run(limit_threads, 1)
    return client.get_executor(), close


class _Sweep:
    """One call of run_sweep: its configurations, folder, progress bar and counts, and how results are recorded."""

    def __init__(self, cfgs: Sequence[SimConfig], out: Path, bar: Any) -> None:
        self.cfgs, self.out, self.bar = cfgs, out, bar
        self.ids = [config_id(c) for c in cfgs]
        self.counts = {"ran": 0, "elsewhere": 0, "before": 0}
        self.busy: list[int] = []
        self.interrupted = False
        self.task: Callable[..., list[dict]] = run_task  # run_sweep binds tensorboard= to it

    def notice(self, message: str, *args: Any) -> None:
        """One line on the "ufm" logger (this module's) at WARNING, not drawn into the progress bar."""
        self.bar.clear()
        LOG.warning(message, *args)
        self.bar.refresh()

    def run_dir(self, i: int) -> Path:
        return self.out / "runs" / self.ids[i]

    def args(self, task: list[int]) -> tuple[list[dict], list[str]]:
        return [self.cfgs[i].to_dict() for i in task], [str(self.run_dir(i)) for i in task]

    def record(self, task: list[int], results: list[dict]) -> None:
        """Count a task's results, record the errors a lost worker left unwritten, and rewrite the table."""
        for i, r in zip(task, results, strict=True):
            if r["status"] == "busy":
                self.busy.append(i)
                continue
            if r["status"] in ("cancelled", "interrupted"):
                self.interrupted = True
                continue
            if r["status"] == "failed" and not (self.run_dir(i) / "error.txt").exists():
                self.run_dir(i).mkdir(parents=True, exist_ok=True)  # a lost worker wrote no traceback
                atomic_write_text(self.run_dir(i) / "error.txt", r["error"] + "\n")
            self.counts["ran" if r["ran"] else "elsewhere"] += 1
            self.bar.update(1)
        rebuild_table(self.out)

    def run_here(self, tasks: list[list[int]]) -> None:
        """The tasks one after the other in this process; Ctrl-C ends the run in progress ("interrupted") and
        the sweep."""
        for task in tasks:
            self.record(task, self.task(*self.args(task)))
            if self.interrupted:
                raise KeyboardInterrupt

    def wait_for_others(self) -> list[int]:
        """Wait until the runs that other sweeps held ("busy") are released; return those still unfinished
        (their sweep stopped before the end: to be run here)."""
        waiting, again = list(self.busy), []
        self.busy = []
        if waiting:
            self.notice("waiting for %d runs that another sweep in %s is computing", len(waiting), self.out)
        while waiting:
            for i in list(waiting):
                lock = run_lock(self.run_dir(i))
                if not lock.acquire():
                    continue
                lock.release()
                waiting.remove(i)
                if finished(self.run_dir(i)) or (self.run_dir(i) / "error.txt").exists():
                    self.counts["elsewhere"] += 1
                    self.bar.update(1)
                else:
                    again.append(i)
            if waiting:
                time.sleep(0.1)
        rebuild_table(self.out)
        return again


def _run_on_dask(sweep: _Sweep, tasks: list[list[int]], workers: int, dask: str,
                 registry: dict[str, list]) -> None:
    executor, close = make_executor(min(workers, len(tasks)), dask)
    futures: dict[Future, list[int]] = {}
    try:
        futures = {executor.submit(sweep.task, *sweep.args(t), registry): t for t in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                results = future.result()
            except Exception as e:  # noqa: BLE001 - a worker lost: its configurations are recorded as failed
                results = [_result("failed", f"{type(e).__name__}: {e}", ran=True)] * len(task)
            sweep.record(task, results)
    except KeyboardInterrupt:
        for future in futures:
            future.cancel()
        raise
    finally:
        close()


def run_sweep(cfgs: Sequence[SimConfig], out: Path, *, workers: int = 2, batch_size: int = 64,
              dask: str | None = None, progress: bool = True, stats: dict | None = None,
              tensorboard: Path | str | None = None) -> list[dict]:
    """Run every configuration of `cfgs` not finished yet under out/runs; return the results table, which also
    lists the configurations of earlier grids (and of other sweeps) in the same folder. workers=1 runs in this
    process; more, on a local process pool (or on Dask), unless workers cannot run this sweep (one line says
    why, and it runs here). A run whose summary is unusable is run again (one line names the file). Ctrl-C
    (KeyboardInterrupt, re-raised) cancels the queued runs, ends the running ones "interrupted", and leaves
    results.csv current. `stats`, when given, receives the counts: ran (here), elsewhere (by another sweep in the
    folder), before (finished before this call). `tensorboard`: a directory; each run computed now writes its
    TensorBoard scalars into tensorboard/ID (ufm.output.tensorboard)."""
    from tqdm import tqdm

    refuse_in_a_starting_worker()
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)

    def warn(line: str) -> None:  # the command line shows it as "python -m ufm.sweep: warning: …"
        LOG.warning("%s", line)

    presence, pool = Presence(out), None
    try:
        others = presence.others()
        if others:
            warn(f"{out}: another sweep is running in this folder ({', '.join(others)}): each run is computed by one "
                 "of them, once, and results.csv lists every grid")
        with table_lock(out):
            merge_record(out, cfgs, warn)
        done = [finished(out / "runs" / config_id(c), warn) and _free(out / "runs" / config_id(c)) for c in cfgs]
        todo = [i for i, d in enumerate(done) if not d]
        here = dask is None and workers == 1
        if todo and dask is None and not here:
            pool, why = start_pool([cfgs[i] for i in todo], min(workers, len(plan([cfgs[i] for i in todo],
                                                                                    batch_size))))
            if why is not None:
                LOG.warning("running the %d configurations in this process, not on %d workers: %s",
                            len(todo), workers, why)
                here = True
        bar = tqdm(total=len(cfgs), initial=sum(done), disable=not progress, desc="sweep", unit="config",
                   dynamic_ncols=True)
        sweep = _Sweep(cfgs, out, bar)
        if tensorboard is not None:  # a partial of a module-level function: it pickles to the workers
            sweep.task = functools.partial(run_task, tensorboard=str(tensorboard))
        sweep.counts["before"] = sum(done)
        rebuild_table(out)
        try:
            _execute(sweep, todo, pool, here, workers, batch_size, dask)
        finally:
            bar.close()
            rows = rebuild_table(out)  # current after Ctrl-C as well
            if stats is not None:
                stats.update(sweep.counts)
    finally:
        if pool is not None:
            pool.close()
        presence.close()
    return rows


def _free(run: Path) -> bool:
    """No process holds the run now (a summary written while another sweep still finishes the run is not final)."""
    lock = run_lock(run)
    if not lock.acquire():
        return False
    lock.release()
    return True


def _execute(sweep: _Sweep, todo: list[int], pool: Pool | None, here: bool, workers: int, batch_size: int,
             dask: str | None) -> None:
    """Run the configurations `todo` (indices into sweep.cfgs) in this process (`here`), on Dask or on `pool`,
    then those that other sweeps held and did not finish, until none is left."""
    cfgs = sweep.cfgs
    try:
        while todo:
            tasks = [[todo[j] for j in t] for t in plan([cfgs[i] for i in todo], batch_size)]
            if here:
                sweep.run_here(tasks)
            elif dask is not None:
                _run_on_dask(sweep, tasks, workers, dask, registry_of([cfgs[i] for i in todo]))
            else:
                lost = pool.run(sweep.task, sweep, tasks)  # type: ignore[union-attr]
                if lost:
                    sweep.notice("ufm.sweep: the worker processes stopped (before running anything, or a worker died "
                                 "and broke the pool); running the %d configurations that had not started in this "
                                 "process", sum(map(len, lost)))
                    here = True
                    sweep.run_here(lost)
            if sweep.interrupted:
                raise KeyboardInterrupt
            todo = sweep.wait_for_others()
    except KeyboardInterrupt:
        if pool is not None and not here:
            pool.stop()
        raise
