"""Running a sweep: configurations grouped into batches (one batch_key, at most --batch-size each), each
batch a task on a concurrent.futures executor (a local process pool, or Dask), every run written to
OUT/runs/ID, and one tidy table OUT/results.csv rebuilt from the finished runs. A run counts as finished
once its summary.json exists, so a killed sweep restarted with the same grid skips it; a configuration
that fails is recorded with its error (OUT/runs/ID/error.txt and the table) and does not stop the others."""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from ufm.config import SimConfig
from ufm.output.rundir import atomic_write_text, write_csv
from ufm.sweeps.grid import config_id

FINAL_COLUMNS = ("loss", "data_loss", "accuracy", "nc1", "nc2", "nc3", "nc4", "W_norm_sq", "H_norm_sq", "grad_norm")
RENAMED = {"loss": "objective"}  # the table's "loss" column is the loss function's name
CONFIG_COLUMNS = ("K", "n", "d", "loss", "wd_W", "wd_H", "wd_b", "bias", "lr", "steps", "optimizer", "seed",
                  "dtype", "init_scale", "depth", "imbalance", "minority", "hierarchy")


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive the sweep (a SIGKILLed sweep left its workers running): on Linux the kernel
    sends it SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere a thread polls the parent's pid.
    `parent`: the sweep's pid, passed in, since a worker whose parent died while it was starting has already
    been adopted by another process."""
    import signal
    import sys
    import threading
    import time

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


def _limit_threads(threads: int, parent: int | None = None) -> None:
    """Each worker process computes with `threads` threads (workers × threads = the cores) and leaves
    Ctrl-C to the main process (a worker that caught it would write an "interrupted" run)."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _die_with_parent(parent)
    torch.set_num_threads(max(1, threads))


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


def run_task(configs: list[dict], outs: list[str]) -> list[dict]:
    """One task: its configurations as a batch when there are several (falling back to one by one if the
    batch fails), each alone otherwise. Returns one {"id", "status", "error"} per configuration; never
    raises for a configuration's failure."""
    import torch

    from ufm.api import run, run_batch

    cfgs = [SimConfig.from_dict(c) for c in configs]
    for out in outs:
        (Path(out) / "error.txt").unlink(missing_ok=True)  # a new attempt: an old failure no longer applies
    if len(cfgs) > 1:
        try:
            # the sweep owns these folders, and its workers' thread counts (set by _limit_threads)
            results = run_batch(cfgs, [Path(o) for o in outs], overwrite=True, threads=torch.get_num_threads())
            return [{"status": r.status, "error": ""} for r in results]
        except Exception:  # noqa: BLE001 - one bad configuration must not cost the batch: run them alone
            pass
    results = []
    for cfg, out in zip(cfgs, outs, strict=True):
        if finished(Path(out)):  # the batch got this far before it failed
            results.append({"status": json.loads((Path(out) / "summary.json").read_text())["status"], "error": ""})
            continue
        try:
            result = run(cfg, Path(out), progress=False, overwrite=True, threads=torch.get_num_threads())
            results.append({"status": result.status, "error": ""})
        except Exception as e:  # noqa: BLE001 - recorded with its error, the others go on
            Path(out).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(out) / "error.txt", traceback.format_exc())
            results.append({"status": "failed", "error": f"{type(e).__name__}: {e}"})
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
    settings = cfg.to_dict()
    row: dict[str, Any] = {"id": config_id(cfg), "status": "pending", "error": ""}
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


def write_table(out: Path, cfgs: Sequence[SimConfig]) -> list[dict]:
    rows = [row_of(cfg, out / "runs" / config_id(cfg)) for cfg in cfgs]
    write_csv(out / "results.csv", rows)
    return rows


def make_executor(workers: int, dask: str | None) -> tuple[Executor, Callable[[], None]]:
    """(executor, close): a local process pool of `workers` processes, or Dask — `dask="local"` starts a
    local cluster of `workers` single-threaded worker processes, any other value is a scheduler address."""
    if dask is None:
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // workers)
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_limit_threads, initargs=(threads, os.getpid()))
        return pool, lambda: pool.shutdown(wait=True, cancel_futures=True)
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
    client.run(_limit_threads, 1)
    return client.get_executor(), close


RECORD = "sweep.json"  # every configuration ever swept into this folder: results.csv lists them all


def merge_record(out: Path, cfgs: Sequence[SimConfig], warn: Callable[[str], None]) -> list[SimConfig]:
    """The configurations of this sweep folder: those of earlier grids (out/sweep.json, or the runs' own
    config.json in a folder from before the record existed) followed by the new ones, each once. A second grid in
    the same --out is merged, never a reason to drop the first one's rows from results.csv."""
    path, earlier = out / RECORD, []
    try:
        if path.exists():
            earlier = [SimConfig.from_dict(c) for c in json.loads(path.read_text(encoding="utf-8"))["configs"]]
        else:
            for config in sorted((out / "runs").glob("*/config.json")):
                earlier.append(SimConfig.from_dict(json.loads(config.read_text(encoding="utf-8"))))
    except (OSError, ValueError, KeyError, TypeError) as e:
        warn(f"{path if path.exists() else out / 'runs'}: cannot read the earlier configurations ({e}); results.csv "
             "lists this grid's only")
        earlier = []
    merged = {config_id(c): c for c in earlier}
    new = [c for c in cfgs if config_id(c) not in merged]
    if merged and new:
        warn(f"{out}: merging this grid ({len(cfgs)} configurations) with {len(merged)} of earlier grids; "
             "results.csv lists all of them")
    merged.update({config_id(c): c for c in cfgs})
    atomic_write_text(path, json.dumps({"configs": [c.to_dict() for c in merged.values()]}, indent=1))
    return list(merged.values())


def run_sweep(cfgs: Sequence[SimConfig], out: Path, *, workers: int = 2, batch_size: int = 64,
              dask: str | None = None, progress: bool = True) -> list[dict]:
    """Run every configuration of `cfgs` not finished yet under out/runs; return the results table, which also
    lists the configurations of earlier grids swept into the same folder (`merge_record`). A run whose summary
    is unusable is run again (one line names the file)."""
    from tqdm import tqdm

    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)

    def warn(line: str) -> None:
        tqdm.write(f"python -m ufm.sweep: warning: {line}", file=sys.stderr)

    table = merge_record(out, cfgs, warn)
    ids = [config_id(c) for c in cfgs]
    done = [finished(out / "runs" / i, warn) for i in ids]
    todo = [i for i, d in enumerate(done) if not d]
    tasks = [[todo[j] for j in t] for t in plan([cfgs[i] for i in todo], batch_size)]
    write_table(out, table)
    bar = tqdm(total=len(cfgs), initial=sum(done), disable=not progress, desc="sweep", unit="config",
               dynamic_ncols=True)
    if tasks:
        executor, close = make_executor(min(workers, len(tasks)), dask)
        try:
            futures: dict[Future, list[int]] = {
                executor.submit(run_task, [cfgs[i].to_dict() for i in t], [str(out / "runs" / ids[i]) for i in t]): t
                for t in tasks}
            for future in as_completed(futures):
                members = futures[future]
                try:
                    results = future.result()
                except Exception as e:  # noqa: BLE001 - a worker lost: its configurations are recorded as failed
                    results = [{"status": "failed", "error": f"{type(e).__name__}: {e}"}] * len(members)
                for i, r in zip(members, results, strict=True):
                    if r["status"] == "failed" and not (out / "runs" / ids[i] / "error.txt").exists():
                        # a lost worker wrote no traceback: record the executor's error
                        (out / "runs" / ids[i]).mkdir(parents=True, exist_ok=True)
                        atomic_write_text(out / "runs" / ids[i] / "error.txt", r["error"] + "\n")
                bar.update(len(members))
                write_table(out, table)
        finally:
            close()
            bar.close()
    return write_table(out, table)
