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
from ufm.output.summary import build_summary
from ufm.output.table import format_table
from ufm.problem import Problem, resolve


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
        overwrite: bool = False, threads: int | None = None) -> RunResult:
    """Simulate one UFM (DESIGN §5.2) and hold its end point against theory. With `out`, also write the run
    directory there (config.json, history.csv as it goes, summary.json, params.pt); a directory that already
    holds a run is refused (ufm.output.rundir.RunDirInUse) unless `overwrite`. `cfg` may be a resolved Problem
    (ufm.resolve(cfg)), which is then not resolved again. Ctrl-C (or SIGTERM under the command line) at any point
    ends the run with status "interrupted" and whatever it had: the summary, then the parameters. `threads`: CPU
    threads (None: ufm.fit.threads.auto_threads — one for small problems, else the idle cores). Example:
    >>> r = run(SimConfig(K=4, n=5, d=6, loss="ce", wd=5e-3, steps=300, dtype="float64"), progress=False)
    >>> r.summary["theory"]["name"], abs(r.summary["rel_gap"]["loss"]) < 1e-3
    ('ce_etf', True)
    """
    return run_batch([cfg], None if out is None else [out], progress=progress, overwrite=overwrite,
                     threads=threads)[0]


def run_batch(cfgs: Sequence[SimConfig | Problem], outs: Sequence[Path | str] | None = None, *,
              progress: bool = False, overwrite: bool = False, threads: int | None = None) -> list[RunResult]:
    """Run many configurations: those of one `batch_key` (same shapes, loss and steps; full-batch GD on the
    one-layer UFM under a loss with a closed-form step) step together as one batched program, the others
    one by one; each gets the result (and, with `outs`, the run directory) a single run would, equal to it
    up to rounding. Results come back in the order of `cfgs`. Output directories that hold a run are refused
    before anything runs, unless `overwrite`. Example:
    >>> cfgs = [SimConfig(K=3, n=4, d=5, loss="mse", wd=w, steps=50, certificate=False) for w in (1e-3, 1e-2)]
    >>> [round(r.final["W_norm_sq"], 3) > 0 for r in run_batch(cfgs)]
    [True, True]
    """
    if outs is not None and len(outs) != len(cfgs):
        raise ValueError(f"{len(cfgs)} configurations but {len(outs)} output directories")
    for item in cfgs:  # before anything is allocated (or hashed: a batch key of 10⁸ class counts takes seconds)
        cfg = item.cfg if isinstance(item, Problem) else item
        check_memory(cfg, str(resolve_device(cfg.device)))
    for out in outs or ():
        claim_run_dir(out, overwrite)
    groups: dict[Any, list[int]] = {}
    for i, item in enumerate(cfgs):
        key = batch_key(item.cfg if isinstance(item, Problem) else item)
        groups.setdefault(("alone", i) if key is None else key, []).append(i)
    results: list[RunResult | None] = [None] * len(cfgs)
    for members in groups.values():
        group_outs = None if outs is None else [Path(outs[i]) for i in members]
        items = [cfgs[i] for i in members]
        first = items[0].cfg if isinstance(items[0], Problem) else items[0]
        count = None if resolve_device(first.device).type != "cpu" else threads or auto_threads(first)
        with thread_count(count):
            for i, r in zip(members, _run_group(items, group_outs, progress), strict=True):
                results[i] = r
    return results  # type: ignore[return-value]


def _run_group(items: list[SimConfig | Problem], outs: list[Path] | None, progress: bool) -> list[RunResult]:
    """Configurations that step together (one stepper): problem → parameters → the loop → checks → output."""
    problems = [p if isinstance(p, Problem) else resolve(p) for p in items]
    for p in problems:  # the spherical code's search (computed at the end) draws its bar only with the run's
        p.progress = progress
    cfgs = [p.cfg for p in problems]
    device, dtype = resolve_device(cfgs[0].device), resolve_dtype(cfgs[0].dtype)
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

    def write_history(i: int, history: list[dict]) -> None:
        if outs is not None:
            write_csv(outs[i] / "history.csv", history)

    done = fit(problems, stepper, y, progress=progress, on_row=write_history)
    results, interrupted = [], done.status == "interrupted"
    for i, problem in enumerate(problems):
        final = with_classifier(stepper.params(i), problem, y)  # a loss of the features alone: W from the means
        end = EndOfRun(problem, final, y, done.histories[i], done.status_of(i), progress=progress)
        out = None if outs is None else outs[i]
        cpu = {k: v.detach().cpu() for k, v in final.items()}
        interrupted = _finish(end, out, cpu, done, i, str(device), interrupted)
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
    end.summary = build_summary(problem.cfg, done.histories[i], end.target, status=end.status, steps=done.steps_of(i),
                                seconds=done.seconds, device=device, divergence=done.watch.report(i), saddle=saddle)
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
          overwrite: bool = False) -> TrainResult:
    """Train a real backbone (MLP, ResNet18, WRN) with the UFM's losses and NC metrics (ufm.backbone); with
    `out`, write the run directory there (config.json, history.csv, checkpoint.pt every epoch, summary.json;
    `resume` continues from its checkpoint; a directory holding another run is refused unless `overwrite`). Example:
    >>> from ufm.backbone.config import TrainConfig
    >>> r = train(TrainConfig(dataset="synthetic", classes=3, per_class=8, test_per_class=4, mlp_width=8,
    ...                       epochs=2, batch_size=8, device="cpu"), progress=False)
    >>> r.summary["epochs"], sorted(r.history[-1])[:3], r.run_dir
    (2, ['H_norm_sq', 'W_norm_sq', 'accuracy'], None)
    """
    from ufm.backbone.training import train_backbone

    summary, history, network = train_backbone(cfg, out, progress=progress, resume=resume, overwrite=overwrite)
    return TrainResult(cfg, summary, history, network, None if out is None else Path(out))


def sweep(grid: Mapping[str, Sequence[Any]], out: Path | str, *, fixed: Mapping[str, Any] | None = None,
          workers: int = 2, batch_size: int = 64, dask: str | None = None, progress: bool = True) -> list[dict]:
    """Run the grid {field: [values]} (with `fixed` settings; keys are SimConfig's flat fields as in
    summary.json's config, and wd) into out/runs/ID, batched where shapes agree, restartable; return the rows
    of out/results.csv. Example:
    >>> import tempfile
    >>> rows = sweep({"wd": [1e-3, 1e-2]}, tempfile.mkdtemp(), fixed={"K": 3, "n": 4, "d": 5, "steps": 20,
    ...              "certificate": False}, workers=1, progress=False)
    >>> [r["status"] for r in rows]
    ['ok', 'ok']
    """
    from ufm.sweeps.grid import expand
    from ufm.sweeps.runner import run_sweep

    cfgs = expand(dict(fixed or {}), {k: list(v) for k, v in grid.items()})
    return run_sweep(cfgs, Path(out), workers=workers, batch_size=batch_size, dask=dask, progress=progress)
