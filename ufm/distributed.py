"""One UFM problem across processes and GPUs (data parallelism on torch.distributed: gloo on CPUs, NCCL on GPUs),
launched by torchrun or Slurm: `ufm.run(cfg, distributed=True)` inside an initialized process group, or
`torchrun --nproc-per-node P -m ufm.simulate -- --K … --d …` (the `--` keeps torchrun's own parser off ufm's flags).

Each of the P processes holds its shard of the rows of H (ufm.fit.shard.Shard: contiguous, uneven where P does not
divide N, classes split across ranks), W and b are replicated. Per process: memory (N/P)·d + K·d + K values for the
parameters (Adam: three times that), traffic per step 2(P − 1)/P·(Kd + K + 1) values sent by a ring all-reduce (fused
GD: the packed [η Gᵀ H | η Σ G | loss]; SGD/Adam: W's and b's gradients and F). Measurements are reduced statistics
(ufm.fit.sharded_measure), identical on every rank. Rank 0 writes the run directory (config.json with the process
count, history.csv, summary.json) and params.pt with the WHOLE H, gathered on rank 0 at the end (N·d values there
once); the end-of-run checks (theory target, certificate) run on rank 0 with the gathered parameters.

Refused with one line (ValueError): no initialized process group; deep or constrained features, the sphere, class
trees; losses without a closed-form gradient (SupCon, focal, …: they would need all samples or an autograd
measurement); L-BFGS (its line search needs global dot products); fewer samples than processes."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from analysis.blocked import memory_budget
from ufm.config import SimConfig
from ufm.devices import resolve_device, resolve_dtype
from ufm.fit.loop import fit
from ufm.fit.shard import Shard
from ufm.fit.sharded import sharded_stepper
from ufm.fit.sharded_measure import measure_shard
from ufm.fit.threads import auto_threads, thread_count
from ufm.model import init_params
from ufm.output.rundir import claim_run_dir, environment, write_csv, write_json
from ufm.problem import Problem, resolve


class RankFailed(RuntimeError):
    """A process of a distributed run failed (or vanished): the collective raised on the others."""


def check_shardable(problem: Problem, world: int) -> None:
    """ValueError (one line) for what a data-parallel run does not support."""
    cfg = problem.cfg
    if cfg.depth != 1 or cfg.features != "free" or cfg.normalize != "none" or problem.tree is not None:
        raise ValueError("distributed runs support the one-layer UFM of free features without --normalize or a class "
                         "tree")
    if not cfg.loss.entry.fused:
        raise ValueError(f"distributed runs support the losses with a closed-form gradient (ce, ls, mse), not "
                         f"{cfg.loss.name!r}: it needs all samples at once or an autograd measurement")
    if cfg.optimizer == "lbfgs":
        raise ValueError("distributed runs support --optimizer gd, sgd and adam, not lbfgs (its line search would need "
                         "global dot products)")
    if cfg.N < world:
        raise ValueError(f"{world} processes need at least {world} samples, got N = {cfg.N}")


def device_of(cfg: SimConfig) -> torch.device:
    """The run's device; on CUDA the GPU this process was given (torch.cuda.set_device, as torchrun users do)."""
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def run_distributed(item: SimConfig | Problem, out: Path | str | None = None, *, progress: bool = True,
                    overwrite: bool = False, threads: int | None = None, resume: bool = False):
    """`ufm.run(cfg, out, distributed=True)`: this process's part of one run on all processes of the default group.
    Every rank returns the same summary and history; `params` holds the whole H on rank 0 and this rank's rows of H
    (with W and b) on the others. With `out`, checkpoint.pt at each measurement step: the whole H and H's rows of the
    optimizer state gathered on rank 0 (ufm.fit.checkpoint); `resume` continues from it, on any number of processes
    (another P than the checkpoint's re-shards H, said in one line from rank 0)."""
    from ufm.api import RunResult, _finish, log_line
    from ufm.checks import EndOfRun, check_lines
    from ufm.fit import checkpoint as ckpt
    from ufm.model import with_classifier

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("distributed=True needs an initialized process group: call torch.distributed."
                         "init_process_group first, or launch with torchrun")
    problem = item if isinstance(item, Problem) else resolve(item)
    cfg, world = problem.cfg, dist.get_world_size()
    check_shardable(problem, world)
    shard = Shard(dist.get_rank(), world, cfg.N)
    device, dtype = device_of(cfg), resolve_dtype(cfg.dtype)
    out = None if out is None else Path(out)
    failure: list = ["", None]
    if shard.main and out is not None:
        try:
            if resume:
                failure[1] = ckpt.load(out, cfg)
            else:
                claim_run_dir(out, overwrite)
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "config.json", {**cfg.to_dict(), "device_used": str(device), "processes": world,
                                             "memory_budget": memory_budget(device), "environment": environment()})
        except ckpt.CheckpointError as e:
            failure = [f"{e}", None]
        except (OSError, ValueError) as e:
            failure = [f"{type(e).__name__}: {e}", None]
    dist.broadcast_object_list(failure, src=0)
    if failure[0].startswith("--resume"):
        raise ckpt.CheckpointError(failure[0])
    if failure[0]:
        raise ValueError(f"rank 0 could not start the run directory ({failure[0]})")
    y_all = problem.labels(device)
    y = y_all[shard.rows]
    # drawn whole from the seed (the single-process start), then each rank keeps its rows: a transient N·d per rank
    full = init_params(problem, device, dtype)
    params = {k: (v.detach()[shard.rows] if k == "H" else v.detach()).clone().requires_grad_(v.requires_grad)
              for k, v in full.items()}
    del full
    stepper = sharded_stepper(problem, params, y, shard)
    state = failure[1]
    if resume and not ckpt.resumable(stepper):
        raise ckpt.CheckpointError(f"--resume: the state of this run's stepper ({type(stepper).__name__}) is not "
                                   "checkpointed")
    if state is not None:
        ckpt.load_stepper(stepper, *ckpt.sharded_state(state, stepper, shard))
        if state["processes"] != world and shard.main:
            log_line(f"resumed the run of {state['processes']} processes on {world}: the checkpoint holds the whole H, "
                     "re-sharded (equal to rounding, not bit for bit)")

    def save(step: int, histories: list[list[dict]], seconds: float, watch) -> None:
        if out is None:
            return
        whole, inner = ckpt.gathered_state(stepper, shard)
        if shard.main:
            ckpt.save(out / ckpt.CHECKPOINT, cfg, step, whole, inner, histories[0], seconds, watch.first[0], world)

    def write_history(i: int, history: list[dict]) -> None:
        if shard.main and out is not None:
            write_csv(out / "history.csv", history)

    count = None if device.type != "cpu" else threads or auto_threads(cfg)
    try:
        with thread_count(count):
            done = fit([problem], stepper, y, progress=progress and shard.main, on_row=write_history,
                       measure_row=lambda p, labels, pr: measure_shard(p, labels, pr, shard), resume=state,
                       on_measured=save)
        local = {k: v.detach() for k, v in stepper.params(0).items()}
        H = shard.gather_rows(local["H"])
    except RuntimeError as e:  # gloo/NCCL raise here when another process died
        raise RankFailed(f"a process of the distributed run failed (rank {shard.rank} saw: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    result = [None, None]
    if shard.main:
        final = with_classifier({**{k: v.clone().requires_grad_(True) for k, v in local.items()},
                                 "H": H.requires_grad_(True)}, problem, y_all)
        end = EndOfRun(problem, final, y_all, done.histories[0], done.status_of(0), progress=progress)
        cpu = {k: v.detach().cpu() for k, v in final.items()}
        _finish(end, out, cpu, done, 0, str(device), done.status == "interrupted")
        result = [end.summary, check_lines(end.summary)]
    dist.broadcast_object_list(result, src=0)
    params_out = cpu if shard.main else {k: v.cpu() for k, v in local.items()}
    return RunResult(cfg, result[0], done.histories[0], params_out, out, result[1])
