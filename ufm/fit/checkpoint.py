"""Checkpoints of a UFM run (`python -m ufm.simulate --resume`, `ufm.run(cfg, out, resume=True)`).

The rule: checkpoint.pt is written into the run directory, atomically, at every measurement step of the log schedule
(--evals-per-decade) and so also at the last step. A measurement step is where the steppers synchronize anyway
(FusedGD folds its lazy scale of H back in), so the state saved there is exactly the state the uninterrupted run goes
on from: the trajectory after resuming equals it bit for bit on one process. An interrupt (Ctrl-C) loses the steps
since the last measurement, never a torn checkpoint.

It holds (tensors and plain values only: torch.load(..., weights_only=True)): the configuration, the step reached, the
parameters (the WHOLE H; in a distributed run gathered on rank 0), the stepper's state (fused GD has none beyond the
parameters; SGD's momentum buffers and Adam's moments and step counts, H's rows of them gathered like H; the state of
the mini-batch generator), the history so far, the elapsed seconds, the divergence watch's first loss and the number
of processes P. Resuming on another P re-shards H and its optimizer rows (the reductions then sum in another order:
equal to rounding, not bit for bit).

"The same flags": every field of the configuration must equal the checkpoint's, except RESUMABLE (--steps, which
may grow to continue a run further but not fall below the step reached; the schedule after the step reached is the
new --steps' schedule; --certificate and --device, which do not change the trajectory's definition, and
--evals-per-decade, the measurement schedule)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ufm.config import ConfigError, SimConfig
from ufm.output.rundir import atomic_write

CHECKPOINT = "checkpoint.pt"
FORMAT = 1
KIND = "ufm.simulate"
RESUMABLE = ("steps", "certificate", "device", "evals_per_decade")


class CheckpointError(ConfigError):
    """No checkpoint, an unreadable one, or one of another configuration: one line."""


def resumable(stepper: Any) -> bool:
    """Whether `stepper`'s whole state is saved (FusedGD; Autograd and ShardedAutograd with GD, SGD or Adam)."""
    from ufm.fit.sharded import ShardedAutograd
    from ufm.fit.steppers import Autograd, FusedGD

    if type(stepper) is FusedGD:
        return stepper.single is not None
    return type(stepper) in (Autograd, ShardedAutograd) and isinstance(stepper.opt, torch.optim.Optimizer)


def stepper_state(stepper: Any) -> dict[str, Any]:
    """The optimizer's state dict and the mini-batch generator's state ({} for fused GD: only the parameters)."""
    if not hasattr(stepper, "opt"):
        return {}
    return {"optimizer": stepper.opt.state_dict(), "batch_gen": stepper.batch_gen.get_state()}


def h_index(stepper: Any) -> int | None:
    """The optimizer's index of H (its per-parameter state holds H's rows), or None."""
    H = stepper.param_dict["H"]
    for i, p in enumerate(stepper.opt.param_groups[0]["params"]):
        if p is H:
            return i
    return None


def load_stepper(stepper: Any, params: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Copy the checkpoint's parameters into the stepper's (in place: the optimizer keeps its references) and its
    optimizer and generator states."""
    with torch.no_grad():
        for k, v in params.items():
            stepper.params(0)[k].copy_(v)
    if "optimizer" in state:
        opt = stepper.opt
        opt.load_state_dict(state["optimizer"])
        stepper.batch_gen.set_state(state["batch_gen"])


def save(path: Path, cfg: SimConfig, step: int, params: dict[str, torch.Tensor], stepper: dict[str, Any],
         history: list[dict], seconds: float, first_loss: float | None, processes: int) -> None:
    """Write checkpoint.pt atomically (a temporary file renamed over it)."""
    state = {"format": FORMAT, "kind": KIND, "config": cfg.to_dict(), "step": step,
             "params": {k: v.detach().cpu() for k, v in params.items()}, "stepper": stepper,
             "history": [dict(r) for r in history], "seconds": seconds, "first_loss": first_loss,
             "processes": processes}
    atomic_write(path, lambda f: torch.save(state, f), binary=True)


def load(out: Path | str, cfg: SimConfig) -> dict[str, Any]:
    """The checkpoint of run directory `out`, checked against `cfg` (CheckpointError, one line: none there, unreadable,
    of another configuration, or beyond cfg.steps). Example:
    >>> import tempfile
    >>> load(tempfile.mkdtemp(), SimConfig(K=3, n=4, d=5))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ufm.fit.checkpoint.CheckpointError: resume=True: out ... holds no checkpoint.pt to continue: ...
    """
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"--resume: --out {out} holds no {CHECKPOINT} to continue: check --out, or drop "
                              "--resume to start a fresh run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torn, foreign or unsafe: one line, never torch's advice to load it unsafely
        raise CheckpointError(f"--resume: cannot read the checkpoint {path} (truncated, corrupted or of another "
                              "format): move it away to start afresh") from None
    if not isinstance(state, dict) or state.get("kind") != KIND or state.get("format") != FORMAT:
        raise CheckpointError(f"--resume: {path} is not a ufm.simulate checkpoint (format {FORMAT})")
    saved, now = state["config"], cfg.to_dict()
    diff = [f"{k} {saved.get(k)!r} (checkpoint) vs {now.get(k)!r} (now)" for k in now
            if k not in RESUMABLE and k != "N" and saved.get(k) != now.get(k)]
    if diff:
        raise CheckpointError(f"--resume: the checkpoint {path} is of another configuration: " + "; ".join(diff))
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= cfg.steps:
        raise CheckpointError(f"--resume: the checkpoint {path} holds step {step!r}, beyond --steps {cfg.steps}: "
                              "give --steps at least that")
    if not isinstance(state.get("seconds"), (int, float)) or not math.isfinite(state["seconds"]):
        raise CheckpointError(f"--resume: the checkpoint {path} is damaged: its seconds {state.get('seconds')!r}")
    return state


def gathered_state(stepper: Any, shard: Any) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    """A data-parallel stepper's parameters and state with H, and H's rows of the optimizer state, gathered on rank
    0 ((None, None) on the other ranks). A collective: every rank calls it at the same step."""
    params = {k: v.detach() for k, v in stepper.params(0).items()}
    H = shard.gather_rows(params["H"])
    state = stepper_state(stepper)
    if "optimizer" in state:
        i = h_index(stepper)  # state_dict() shares the optimizer's live per-parameter dicts: gather into copies
        opt = state["optimizer"]
        rows = {key: shard.gather_rows(value) if isinstance(value, torch.Tensor) and value.shape == params["H"].shape
                else value for key, value in sorted(opt["state"].get(i, {}).items())}
        state = {**state, "optimizer": {**opt, "state": {**opt["state"], i: rows}} if i in opt["state"] else opt}
    if not shard.main:
        return None, None
    return {**params, "H": H}, state


def sharded_state(state: dict[str, Any], stepper: Any, shard: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The checkpoint's parameters and stepper state cut to this shard's rows (re-sharded where P differs)."""
    params = {k: v[shard.rows] if k == "H" else v for k, v in state["params"].items()}
    inner = state["stepper"]
    if "optimizer" in inner:
        i = h_index(stepper)
        rows = inner["optimizer"]["state"].get(i, {})
        for key, value in list(rows.items()):
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == shard.N:
                rows[key] = value[shard.rows].clone()
    return params, inner
