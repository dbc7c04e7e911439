"""The library: one call per thing the command-line tools do, returning typed results in memory; files are
written only where `out` is given. Re-exported by `ufm/__init__.py`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from analysis.blocked import memory_budget
from analysis.theory import not_applicable
from ufm.checks import EndOfRun, check_lines, run_checks
from ufm.checks.theory import theory_target
from ufm.config import SimConfig
from ufm.devices import resolve_device, resolve_dtype
from ufm.fit.loop import fit
from ufm.fit.memory import check_memory
from ufm.fit.saddle import origin_saddle
from ufm.fit.steppers import batch_key, make_stepper
from ufm.fit.threads import auto_threads, thread_count
from ufm.model import init_params, with_classifier
from ufm.output.rundir import atomic_write, claim_run_dir, environment, write_csv, write_json
from ufm.output.summary import build_summary, dropped_classes
from ufm.output.table import format_table
from ufm.output.tensorboard import ScalarLog, check_logdir
from ufm.problem import Problem, resolve
from ufm.validation import check_bool, check_int


def log_line(text: str) -> None:
    """One line for the user (the command line shows the "ufm" logger's records on stderr)."""
    import logging

    logging.getLogger("ufm").warning(text)


@dataclass
class RunResult:
    """One UFM run: its configuration, summary (the dict summary.json holds), history (one dict per
    evaluation, the rows of history.csv), final parameters (detached, on the CPU: H, W, b, M1, …) and run
    directory (None when nothing was written). Example:
    >>> r = run(SimConfig(K=3, n=4, d=5, loss="mse", wd=1e-2, steps=50, certificate=False), progress=False)
    >>> r.status, r.params["W"].shape, r.history[-1]["step"], r.run_dir
    ('ok', torch.Size([3, 5]), 50, None)
    """

    config: SimConfig
    summary: dict
    history: list[dict]
    params: dict[str, torch.Tensor]
    run_dir: Path | None = None
    check_lines: list[str] = field(default_factory=list)  # the table lines of the checks this run ran

    @property
    def status(self) -> str:
        """"ok", "diverged" or "interrupted"."""
        return self.summary["status"]

    @property
    def final(self) -> dict:
        """The last finite measurement (summary["final"])."""
        return self.summary["final"]

    def table(self) -> str:
        """The table the command line prints: quantity · measured · predicted · gap, then each check's lines."""
        return format_table(self.summary, self.check_lines)


def run(cfg: SimConfig | Problem, out: Path | str | None = None, *, progress: bool = True,
        overwrite: bool = False, threads: int | None = None, tensorboard: Path | str | None = None,
        distributed: bool = False, resume: bool = False) -> RunResult:
    """Simulate one UFM (DESIGN §5.2) and hold its end point against theory. With `out`, also write the run
    directory there (config.json, history.csv as it goes, summary.json, params.pt); a directory that already
    holds a run is refused (ufm.output.rundir.RunDirInUse) unless `overwrite`. `cfg` may be a resolved Problem
    (ufm.resolve(cfg)), which is then not resolved again. Ctrl-C (or SIGTERM under the command line) at any point
    ends the run with status "interrupted" and whatever it had: the summary, then the parameters. `threads`: CPU
    threads (None: ufm.fit.threads.auto_threads — one for small problems, else the idle cores). `tensorboard`: a
    directory for a TensorBoard event file (every numeric history column as a scalar at its step, then final/*,
    gap/*, rel_gap/*; needs `pip install 'ufm[tensorboard]'`, ImportError otherwise). `distributed`: this process
    runs its shard of one problem on all processes of the initialized torch.distributed group (ufm.distributed:
    H split by rows, W and b replicated, one all-reduce per step; rank 0 writes `out`, params.pt with the whole H
    gathered; ValueError where there is no process group or the run cannot be sharded). With `out`, a run of one
    configuration writes out/checkpoint.pt at each measurement step (ufm.fit.checkpoint: the step, the whole H,
    W, b, the optimizer's state, the history, the mini-batch generator, the process count); `resume` continues
    the run in `out` from it with the same configuration (cfg.steps may be larger than the checkpoint's step:
    the run goes on to it): the trajectory equals the uninterrupted run's. ValueError without `out`, with
    `overwrite`, or where the stepper's state is not saved (L-BFGS, fixed frames, class-tree GD);
    ufm.fit.checkpoint.CheckpointError (a ValueError's sibling, ConfigError) where `out` holds no checkpoint or
    one of another configuration. Example:
    >>> r = run(SimConfig(K=4, n=5, d=6, loss="ce", wd=5e-3, steps=300, dtype="float64"), progress=False)
    >>> r.summary["theory"]["name"], abs(r.summary["rel_gap"]["loss"]) < 1e-3
    ('ce_etf', True)
    """
    if not isinstance(cfg, (SimConfig, Problem)):
        hint = ": build one with ufm.SimConfig(**...)" if isinstance(cfg, Mapping) else ""
        raise TypeError(f"cfg must be a SimConfig or a resolved Problem, got {type(cfg).__name__}{hint}")
    if out is not None and not isinstance(out, (str, Path)):
        raise TypeError(f"out must be a directory (str or Path), got {type(out).__name__}")
    check_bool("distributed", distributed)
    check_bool("resume", resume)
    if resume and out is None:
        raise ValueError("resume=True needs out, the run directory to continue")
    if resume and overwrite:
        raise ValueError("resume=True continues the run in out; overwrite=True replaces it: pass one of them")
    if distributed:
        if tensorboard is not None:
            raise ValueError("tensorboard is not written by distributed runs (rank 0's history.csv has every row)")
        from ufm.distributed import run_distributed

        check_bool("progress", progress)
        check_bool("overwrite", overwrite)
        if threads is not None:
            check_int("threads", threads, lo=1)
        return run_distributed(cfg, out, progress=progress, overwrite=overwrite, threads=threads, resume=resume)
    logdir = check_logdir(tensorboard)
    # one configuration with a run directory is checkpointed, and resumable
    return _run_batch([cfg], None if out is None else [out], progress=progress, overwrite=overwrite, threads=threads,
                      tensorboard=None if logdir is None else [logdir], checkpoint=out is not None,
                      resume=resume)[0]


def run_batch(cfgs: Sequence[SimConfig | Problem], outs: Sequence[Path | str] | None = None, *,
              progress: bool = False, overwrite: bool = False, threads: int | None = None,
              tensorboard: Path | str | Sequence[Path | str] | None = None) -> list[RunResult]:
    """Run many configurations: those of one `batch_key` (same shapes, loss and steps; full-batch GD on the
    one-layer UFM under a loss with a closed-form step) step together as one batched program, the others
    one by one; each gets the result (and, with `outs`, the run directory) a single run would, equal to it
    up to rounding. Results come back in the order of `cfgs`. Output directories that hold a run are refused
    before anything runs, unless `overwrite`. `tensorboard`: a directory, where each run writes its TensorBoard event
    file into a subdirectory named by its index in `cfgs` (0, 1, …; zero-padded to one width), or a list of
    directories, one per configuration (as `run`'s `tensorboard`). Example:
    >>> cfgs = [SimConfig(K=3, n=4, d=5, loss="mse", wd=w, steps=50, certificate=False) for w in (1e-3, 1e-2)]
    >>> [round(r.final["W_norm_sq"], 3) > 0 for r in run_batch(cfgs)]
    [True, True]
    """
    return _run_batch(cfgs, outs, progress=progress, overwrite=overwrite, threads=threads, tensorboard=tensorboard)


def _run_batch(cfgs: Sequence[SimConfig | Problem], outs: Sequence[Path | str] | None, *, progress: bool,
               overwrite: bool, threads: int | None, tensorboard: Path | str | Sequence[Path | str] | None,
               checkpoint: bool = False, resume: bool = False) -> list[RunResult]:
    """`run_batch`, and `run`'s single configuration with `checkpoint` (a run directory's checkpoint.pt) and
    `resume` (continue from it: the directory is not claimed anew)."""
    _check_call(cfgs, outs, progress=progress, overwrite=overwrite, threads=threads)
    if outs is not None and len(outs) != len(cfgs):
        raise ValueError(f"{len(cfgs)} configurations but {len(outs)} output directories")
    logdirs = _logdirs(tensorboard, len(cfgs))
    seen: dict[Path, int] = {}
    for i, out in enumerate(outs or ()):
        j = seen.setdefault(Path(out).expanduser().resolve(), i)
        if j != i:  # the second run would overwrite the first
            raise ValueError(f"outs[{j}] and outs[{i}] are the same directory ({outs[i]}): give each run its own")
    for item in cfgs:  # before anything is allocated (or hashed: a batch key of 10⁸ class counts takes seconds)
        cfg = item.cfg if isinstance(item, Problem) else item
        check_memory(cfg, str(resolve_device(cfg.device)))
    for out in outs or ():
        if not resume:
            claim_run_dir(out, overwrite)
    groups: dict[Any, list[int]] = {}
    for i, item in enumerate(cfgs):
        key = batch_key(item.cfg if isinstance(item, Problem) else item)
        groups.setdefault(("alone", i) if key is None else key, []).append(i)
    results: list[RunResult | None] = [None] * len(cfgs)
    for members in groups.values():
        group_outs = None if outs is None else [Path(outs[i]) for i in members]
        group_logs = None if logdirs is None else [logdirs[i] for i in members]
        items = [cfgs[i] for i in members]
        first = items[0].cfg if isinstance(items[0], Problem) else items[0]
        count = None if resolve_device(first.device).type != "cpu" else threads or auto_threads(first)
        with thread_count(count):
            for i, r in zip(members, _run_group(items, group_outs, progress, group_logs, checkpoint=checkpoint,
                                                resume=resume), strict=True):
                results[i] = r
    return results  # type: ignore[return-value]


def _check_call(cfgs: Any, outs: Any, **flags: Any) -> None:
    """The types of a run_batch call, before anything runs: TypeError naming the argument (cfgs[1], outs[0], …)."""
    if isinstance(cfgs, (str, bytes, Mapping)) or not isinstance(cfgs, Sequence):
        raise TypeError(f"cfgs must be a list of SimConfig (or resolved Problem), got {type(cfgs).__name__}")
    for i, item in enumerate(cfgs):
        if not isinstance(item, (SimConfig, Problem)):
            hint = ": build one with ufm.SimConfig(**...)" if isinstance(item, Mapping) else ""
            raise TypeError(f"cfgs[{i}] must be a SimConfig or a resolved Problem, got {type(item).__name__}{hint}")
    if outs is not None:
        if isinstance(outs, (str, bytes, Path)) or not isinstance(outs, Sequence):
            raise TypeError(f"outs must be a list of directories (str or Path), one per configuration, got "
                            f"{type(outs).__name__}")
        for i, out in enumerate(outs):
            if not isinstance(out, (str, Path)):
                raise TypeError(f"outs[{i}] must be a directory (str or Path), got {type(out).__name__}")
    check_bool("progress", flags["progress"])
    check_bool("overwrite", flags["overwrite"])
    if flags["threads"] is not None:
        check_int("threads", flags["threads"], lo=1)


def _logdirs(tensorboard: Any, count: int) -> list[Path] | None:
    """run_batch's `tensorboard`: one directory per configuration (DIR/0, DIR/1, … from a single directory), or None;
    TypeError/ValueError naming the argument, ImportError where the tensorboard package is missing."""
    if tensorboard is None or isinstance(tensorboard, (str, Path)):
        root = check_logdir(tensorboard)
        width = len(str(max(count - 1, 0)))
        return None if root is None else [root / f"{i:0{width}d}" for i in range(count)]
    if isinstance(tensorboard, (bytes, Mapping)) or not isinstance(tensorboard, Sequence):
        raise TypeError(f"tensorboard must be None, a directory (str or Path) or a list of directories, one per "
                        f"configuration, got {type(tensorboard).__name__}")
    if len(tensorboard) != count:
        raise ValueError(f"{count} configurations but {len(tensorboard)} tensorboard directories")
    return [check_logdir(d, f"tensorboard[{i}]") for i, d in enumerate(tensorboard)]


def _run_group(items: list[SimConfig | Problem], outs: list[Path] | None, progress: bool,
               logdirs: list[Path] | None = None, *, checkpoint: bool = False, resume: bool = False) -> list[RunResult]:
    """Configurations that step together (one stepper): problem → parameters → the loop → checks → output; with
    `logdirs`, each run's TensorBoard scalars (ufm.output.tensorboard), its file closed however the run ends.
    `checkpoint`: one configuration writing outs[0]/checkpoint.pt at each measurement step; `resume`: continuing
    from it."""
    logs = [ScalarLog(d, "step") for d in logdirs] if logdirs is not None else None
    try:
        return _run_logged(items, outs, progress, logs, checkpoint, resume)
    finally:
        for log in logs or ():
            log.close()


def _run_logged(items: list[SimConfig | Problem], outs: list[Path] | None, progress: bool,
                logs: list[ScalarLog] | None, checkpoint: bool = False, resume: bool = False) -> list[RunResult]:
    from ufm.fit import checkpoint as ckpt

    problems = [p if isinstance(p, Problem) else resolve(p) for p in items]
    for p in problems:  # the spherical code's search (computed at the end) draws its bar only with the run's
        p.progress = progress
    cfgs = [p.cfg for p in problems]
    device, dtype = resolve_device(cfgs[0].device), resolve_dtype(cfgs[0].dtype)
    state = ckpt.load(outs[0], cfgs[0]) if resume and outs is not None else None
    if outs is not None:
        for cfg, out in zip(cfgs, outs, strict=True):
            out.mkdir(parents=True, exist_ok=True)
            extra = {"batched": len(cfgs)} if len(cfgs) > 1 else {}
            # the memory budget sets the blocks, and so the order of summation (results agree to rounding)
            write_json(out / "config.json", {**cfg.to_dict(), "device_used": str(device), **extra,
                                             "memory_budget": memory_budget(device), "environment": environment()})
    y = problems[0].labels(device)
    params = [init_params(p, device, dtype) for p in problems]
    stepper = make_stepper(problems, params, y)
    saving = checkpoint and outs is not None and ckpt.resumable(stepper)
    if resume and not ckpt.resumable(stepper):
        raise ckpt.CheckpointError(f"--resume: the state of this run's stepper ({type(stepper).__name__}, optimizer "
                         f"{cfgs[0].optimizer}) is not checkpointed; resume supports fused GD, and gd, sgd and adam")
    if state is not None:
        ckpt.load_stepper(stepper, state["params"], state["stepper"])
        if state["processes"] != 1:
            log_line(f"resumed the run of {state['processes']} processes on 1 (the whole H was saved: re-sharded; "
                     "equal to rounding, not bit for bit)")

    def save(step: int, histories: list[list[dict]], seconds: float, watch) -> None:
        if saving:
            ckpt.save(outs[0] / ckpt.CHECKPOINT, cfgs[0], step, stepper.params(0), ckpt.stepper_state(stepper),
                      histories[0], seconds, watch.first[0], 1)

    def write_history(i: int, history: list[dict]) -> None:
        if outs is not None:
            write_csv(outs[i] / "history.csv", history)
        if logs is not None:
            logs[i].row(history[-1])

    done = fit(problems, stepper, y, progress=progress, on_row=write_history, resume=state, on_measured=save)
    if state is not None and outs is not None:
        write_csv(outs[0] / "history.csv", done.histories[0])
    results, interrupted = [], done.status == "interrupted"
    for i, problem in enumerate(problems):
        final = with_classifier(stepper.params(i), problem, y)  # a loss of the features alone: W from the means
        end = EndOfRun(problem, final, y, done.histories[i], done.status_of(i), progress=progress)
        out = None if outs is None else outs[i]
        cpu = {k: v.detach().cpu() for k, v in final.items()}
        interrupted = _finish(end, out, cpu, done, i, str(device), interrupted)
        if logs is not None:
            logs[i].finish(end.summary)
        results.append(RunResult(problem.cfg, end.summary, done.histories[i], cpu, out, check_lines(end.summary)))
    return results


def _finish(end: EndOfRun, out: Path | None, cpu: dict[str, torch.Tensor], done, i: int, device: str,
            interrupted: bool) -> bool:
    """The end of one run: theory target (with the certificate), summary, checks, files — summary.json first (small),
    then params.pt, so a full disk or an interrupt loses the large file, not the record. A Ctrl-C here (or during
    the loop: `interrupted`) skips what is left of the expensive part (the convex program, the checks) and ends
    with status "interrupted" (and no claim of convergence). `cpu`: the final parameters for params.pt. Returns
    whether the run was interrupted."""
    problem = end.problem
    finite = [r["loss"] for r in done.histories[i] if math.isfinite(r["loss"])]
    saddle = origin_saddle(problem, end.params, end.y, finite[-1]) if finite and end.status != "diverged" else None

    def mark_interrupted() -> None:
        end.status = "interrupted"
        end.summary.update(status="interrupted", converged=False)

    if interrupted:
        end.status = "interrupted"
        end.__dict__["convex"] = (None, "the run was interrupted")  # the cached property: never solved
        problem.search = False  # nor a spherical code searched for (one already known costs nothing)
    try:
        end.target = theory_target(problem, end.convex[0])
    except KeyboardInterrupt:
        interrupted, end.status = True, "interrupted"
        end.__dict__["convex"] = (None, "interrupted while solving the convex program or searching the code")
        problem.search = False
        problem.__dict__.pop("_code", None)  # an interrupted search: ask again, without searching
        end.target = theory_target(problem, None)
    except Exception as e:  # noqa: BLE001 - a target that fails (on a user's loss, say) costs the target, not the run
        end.target = not_applicable("none", f"the theory target failed ({type(e).__name__}: {e})")
    dropped = dropped_classes(end.params, end.y, problem.cfg) if finite and end.status != "diverged" else []
    end.summary = build_summary(problem.cfg, done.histories[i], end.target, status=end.status, steps=done.steps_of(i),
                                seconds=done.seconds, device=device, divergence=done.watch.report(i), saddle=saddle,
                                dropped=dropped)
    if out is not None:
        write_json(out / "summary.json", end.summary)
    try:
        if not interrupted:
            run_checks(end)
    except KeyboardInterrupt:
        interrupted = True
        mark_interrupted()
    if out is not None:
        write_json(out / "summary.json", end.summary)
        try:
            # the final iterate, for figures and notebooks (tensors only: torch.load(..., weights_only=True))
            atomic_write(out / "params.pt", lambda f: torch.save(cpu, f), binary=True)
        except KeyboardInterrupt:
            interrupted = True
            mark_interrupted()
            end.summary["params_written"] = False
            write_json(out / "summary.json", end.summary)
        end.summary["run_dir"] = str(out)
    return interrupted


@dataclass
class TrainResult:
    """One backbone run: its configuration, summary, history (one dict per measured epoch) and network."""

    config: Any
    summary: dict
    history: list[dict] = field(default_factory=list)
    network: torch.nn.Module | None = None
    run_dir: Path | None = None


def train(cfg, out: Path | str | None = None, *, progress: bool = True, resume: bool = False,
          resume_or_start: bool = False, overwrite: bool = False, tensorboard: Path | str | None = None) -> TrainResult:
    """Train a real backbone (MLP, ResNet18, WRN) with the UFM's losses and NC metrics (ufm.backbone); with
    `out`, write the run directory there (config.json, history.csv, checkpoint.pt every epoch, summary.json;
    `resume` continues from its checkpoint and refuses a directory without one, `resume_or_start` continues or
    starts afresh; a directory holding another run is refused unless `overwrite`). `tensorboard`: a directory for a
    TensorBoard event file (each history row's numeric columns at its epoch, then final/* and test/*; needs
    `pip install 'ufm[tensorboard]'`, ImportError otherwise). Example:
    >>> from ufm.backbone.config import TrainConfig
    >>> r = train(TrainConfig(dataset="synthetic", classes=3, per_class=8, test_per_class=4, mlp_width=8,
    ...                       epochs=2, batch_size=8, device="cpu"), progress=False)
    >>> r.summary["epochs"], sorted(r.history[-1])[:3], r.run_dir
    (2, ['H_norm_sq', 'W_norm_sq', 'accuracy'], None)
    """
    from ufm.backbone.config import TrainConfig
    from ufm.backbone.training import train_backbone

    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if out is not None and not isinstance(out, (str, Path)):
        raise TypeError(f"out must be a directory (str or Path), got {type(out).__name__}")
    for name, value in (("progress", progress), ("resume", resume), ("resume_or_start", resume_or_start),
                        ("overwrite", overwrite)):
        check_bool(name, value)
    if (resume or resume_or_start) and out is None:
        raise ValueError("resume=True (or resume_or_start=True) needs out, the run directory to continue")
    logdir = check_logdir(tensorboard)
    summary, history, network = train_backbone(cfg, out, progress=progress, resume=resume or resume_or_start,
                                               overwrite=overwrite, start_if_none=resume_or_start, tensorboard=logdir)
    return TrainResult(cfg, summary, history, network, None if out is None else Path(out))


def sweep(grid: Mapping[str, Sequence[Any]], out: Path | str, *, fixed: Mapping[str, Any] | None = None,
          workers: int = 2, batch_size: int = 64, dask: str | None = None, progress: bool = True,
          tensorboard: Path | str | None = None) -> list[dict]:
    """Run the grid {field: [values]} (with `fixed` settings; keys are SimConfig's flat fields as in
    summary.json's config, and wd) into out/runs/ID, batched where shapes agree, restartable; return the rows
    of out/results.csv (every grid swept into `out`, by this call or another process). workers=1 runs in this
    process; more start a process pool, except where worker processes cannot run the sweep (a script that calls it
    outside `if __name__ == "__main__":`, a registered loss or check that a worker cannot import, such as a
    lambda or a function defined in a notebook): then it runs here and logs one line saying why
    (logging.getLogger("ufm")). Registered losses and checks reach the workers. Ctrl-C cancels the queued runs,
    ends the running ones "interrupted" and leaves results.csv current. `tensorboard`: a directory where each run
    computed now writes its TensorBoard scalars, in a subdirectory named by its run id (needs `pip install
    'ufm[tensorboard]'`, ImportError otherwise). Example:
    >>> import tempfile
    >>> rows = sweep({"wd": [1e-3, 1e-2]}, tempfile.mkdtemp(), fixed={"K": 3, "n": 4, "d": 5, "steps": 20,
    ...              "certificate": False}, workers=1, progress=False)
    >>> [r["status"] for r in rows]
    ['ok', 'ok']
    """
    from ufm.sweeps.grid import expand
    from ufm.sweeps.runner import run_sweep

    axes, settings = _check_sweep_call(grid, out, fixed, workers=workers, batch_size=batch_size, dask=dask,
                                       progress=progress)
    logdir = check_logdir(tensorboard)
    cfgs = expand(settings, axes)
    return run_sweep(cfgs, Path(out), workers=workers, batch_size=batch_size, dask=dask, progress=progress,
                     tensorboard=logdir)


def _check_sweep_call(grid: Any, out: Any, fixed: Any, **kw: Any) -> tuple[dict[str, list], dict[str, Any]]:
    """A sweep call checked at the door (TypeError or ValueError naming the argument); returns (grid with each axis
    a list, fixed settings). numpy values count as the numbers they hold."""
    from ufm.sweeps.grid import ALIASES, FIELDS

    def plain(v: Any) -> Any:
        return v.item() if type(v).__module__ == "numpy" and getattr(v, "shape", None) == () else v

    if not isinstance(grid, Mapping):
        raise TypeError(f"grid must be a mapping {{setting: [values]}}, e.g. {{'wd': [1e-4, 1e-3]}}, got "
                        f"{type(grid).__name__}")
    if fixed is not None and not isinstance(fixed, Mapping):
        raise TypeError(f"fixed must be a mapping {{setting: value}}, e.g. {{'K': 10}}, got {type(fixed).__name__}")
    if not isinstance(out, (str, Path)):
        raise TypeError(f"out must be the sweep's directory (str or Path), got {type(out).__name__}")
    if not str(out).strip():
        raise ValueError("out must name a directory, got an empty string")
    check_int("workers", kw["workers"], lo=1)
    check_int("batch_size", kw["batch_size"], lo=1)
    check_bool("progress", kw["progress"])
    if kw["dask"] is not None and not isinstance(kw["dask"], str):
        raise TypeError(f"dask must be None, 'local' or a scheduler address, got {type(kw['dask']).__name__}")
    known = FIELDS | set(ALIASES)
    axes: dict[str, list] = {}
    for key, values in grid.items():
        if not isinstance(key, str):
            raise TypeError(f"grid keys must be setting names (str), got {key!r}")
        sized = hasattr(values, "__iter__") and hasattr(values, "__len__")
        if isinstance(values, (str, bytes, Mapping)) or not sized:
            shown = repr(values) if len(repr(values)) <= 40 else repr(values)[:40] + "…"
            raise TypeError(f"grid[{key!r}] must be a list of values (a non-string sequence such as [v1, v2]), got "
                            f"the {type(values).__name__} {shown}")
        axes[key] = [plain(v) for v in values]
        if not axes[key]:
            raise ValueError(f"grid[{key!r}] is empty: give at least one value")
    settings = {k: plain(v) for k, v in (fixed or {}).items()}
    for name, keys in (("grid", list(axes)), ("fixed", list(settings))):
        unknown = [k for k in keys if k not in known]
        if unknown:
            raise ValueError(f"{name} has unknown setting{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))} (SimConfig's fields, and wd for all three blocks)")
    both = sorted(set(axes) & set(settings))
    if both:
        raise ValueError(f"{', '.join(map(repr, both))} is both in grid and in fixed: give it once")
    return axes, settings
