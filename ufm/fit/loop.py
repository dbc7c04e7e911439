"""The UFM training loop: optimize, measure on a log-spaced schedule, write the run directory."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from analysis.theory import etf_exists
from ufm.checks.minority import is_imbalanced, minority_summary, seli_summary
from ufm.checks.sqi import sqi_summary
from ufm.checks.theory import certificate, convex_optimum, gnc_summary, theory_target
from ufm.config import SimConfig
from ufm.devices import resolve_device, resolve_dtype
from ufm.fit.fused_gd import MANUAL_LOSSES, GDStep, LossSpec
from ufm.fit.measure import gram_errors, measure
from ufm.fit.optimizers import make_optimizer
from ufm.fit.schedule import log_schedule
from ufm.model import init_params, labels, objective_and_grad
from ufm.output.rundir import atomic_write, environment, new_run_dir, write_csv, write_json
from ufm.output.summary import build_summary, milestones
from ufm.problem import hierarchy_summary


class DivergenceWatch:
    """Keeps the per-step losses of B configurations (a scalar, or a (B,) tensor per step) on the device
    and checks them in blocks, so a GPU run does not synchronize every step; finds, for each
    configuration, the exact first non-finite step and the last finite loss before it."""

    def __init__(self, B: int = 1, block: int = 64) -> None:
        self.block, self.pending, self.next_step = block, [], 0
        self.last: list[tuple[int, float] | None] = [None] * B
        self.bad: list[tuple[int, float] | None] = [None] * B

    def push(self, losses: torch.Tensor) -> bool:
        self.pending.append(losses.detach().reshape(-1))
        return self.check() if len(self.pending) >= self.block else False

    @property
    def diverged(self) -> list[bool]:
        return [b is not None for b in self.bad]

    def report(self, i: int = 0) -> dict | None:
        """Configuration i's first non-finite step and loss, and the last finite one before it (None if
        all finite)."""
        if self.bad[i] is None:
            return None
        last_step, last_loss = self.last[i] if self.last[i] else (None, None)
        return {"step": self.bad[i][0], "loss": self.bad[i][1], "last_finite_step": last_step,
                "last_finite_loss": last_loss}

    def flag(self, step: int, value: float, i: int = 0) -> None:
        """A non-finite value of configuration i seen outside the per-step losses (at an evaluation)."""
        if self.bad[i] is None:
            self.bad[i] = (step, value)

    def check(self) -> bool:
        """True once every configuration has seen a non-finite loss."""
        if self.pending:
            values = torch.stack(self.pending).double().cpu()  # (steps, B)
            for i in range(values.shape[1]):
                for j, value in enumerate(values[:, i].tolist() if self.bad[i] is None else []):
                    if not math.isfinite(value):
                        self.bad[i] = (self.next_step + j, value)
                        break
                    self.last[i] = (self.next_step + j, value)
            self.next_step += values.shape[0]
        self.pending = []
        return all(self.diverged)


def mini_batch(cfg: SimConfig, gen: torch.Generator, device: torch.device) -> torch.Tensor | None:
    """The samples of this step's loss: a random subset of --batch-size, or None for all of them."""
    if cfg.batch_size is None or cfg.batch_size >= cfg.N:
        return None
    return torch.randperm(cfg.N, generator=gen)[: cfg.batch_size].to(device)


def fused_gd(cfg: SimConfig) -> bool:
    """Full-batch GD on the one-layer UFM under CE, label smoothing or MSE: the closed-form step of
    ufm.fit.fused_gd (three matrix products, H updated inside the last) replaces autograd + optimizer."""
    return (cfg.optimizer == "gd" and cfg.depth == 1 and cfg.loss in MANUAL_LOSSES
            and (cfg.batch_size is None or cfg.batch_size >= cfg.N))


def batch_view(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
    """H, W, b as batches of one configuration (views: the step updates `params` in place)."""
    return {k: params[k].unsqueeze(0) if k in params else None for k in ("H", "W", "b")}


def make_stepper(cfg: SimConfig, params: dict[str, torch.Tensor], y: torch.Tensor, device: torch.device
                 ) -> tuple[Callable[[], torch.Tensor], Callable[[], bool], Callable[[], None]]:
    """(advance, stalled, sync): advance does one optimizer step and returns the loss it saw — the fused
    GD step's mean data loss where `fused_gd`, else the optimizer's step on the objective F (autograd);
    stalled says the optimizer has stopped (L-BFGS's polish); sync makes `params` current (the fused step
    keeps H's decay in a scalar) and must run before they are read."""
    if fused_gd(cfg):
        view, spec = batch_view(params), LossSpec(cfg.loss, cfg.smoothing, cfg.target_scale)
        dtype = params["H"].dtype
        hyper = [torch.tensor([v], dtype=dtype, device=device) for v in (cfg.lr, cfg.wd_W, cfg.wd_H, cfg.wd_b)]
        stepper = GDStep(y, spec, *hyper)
        return ((lambda: stepper.step(view["H"], view["W"], view["b"])[0]), (lambda: False),
                (lambda: stepper.sync(view["H"])))
    opt = make_optimizer(cfg, params)
    batch_gen = torch.Generator().manual_seed(cfg.seed + 1)

    def advance() -> torch.Tensor:
        rows = mini_batch(cfg, batch_gen, device)
        return opt.step(lambda: objective_and_grad(params, y, cfg, rows)[0])

    return advance, (lambda: getattr(opt, "stalled", False)), (lambda: None)


def simulate(cfg: SimConfig, out: Path | str | None = None, *, progress: bool = True) -> dict:
    """Run one UFM simulation; write config.json, history.csv and summary.json under `out` (a fresh
    directory under runs/ when None); return the summary. A diverging run stops at the first
    non-finite loss with summary["status"] = "diverged"."""
    device, dtype = resolve_device(cfg.device), resolve_dtype(cfg.dtype)
    out = Path(out) if out is not None else new_run_dir("runs", f"{cfg.loss}-K{cfg.K}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**cfg.to_dict(), "device_used": str(device),
                                     "environment": environment()})
    y = labels(cfg.class_counts, device)
    params = init_params(cfg, device, dtype)
    advance, stalled, sync = make_stepper(cfg, params, y, device)
    evaluate_at, history, watch = set(log_schedule(cfg.steps, cfg.evals_per_decade)), [], DivergenceWatch()
    start, status, step = time.perf_counter(), "ok", 0
    bar = tqdm(total=cfg.steps, disable=not progress, file=sys.stderr, desc="ufm", unit="step",
               dynamic_ncols=True, mininterval=0.5)
    try:
        for step in range(cfg.steps + 1):
            stop = step == cfg.steps or stalled()
            if step in evaluate_at or stop:
                if watch.check():
                    break
                sync()
                row = {"step": step, "seconds": time.perf_counter() - start, **measure(params, y, cfg)}
                if not math.isfinite(row["loss"]):  # the last step's update left non-finite parameters
                    watch.flag(step, row["loss"])
                    break
                history.append(row)
                write_csv(out / "history.csv", history)
                bar.set_postfix(loss=f"{row['loss']:.6g}", nc1=f"{row['nc1']:.2e}", refresh=False)
                if stop or (cfg.tol > 0 and row["grad_norm"] <= cfg.tol):
                    break
            if watch.push(advance()):
                break
            bar.update()
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        sync()
        bar.close()
    if watch.check():
        status = "diverged"
    return finish_run(cfg, params, y, history, status=status, steps=step, seconds=time.perf_counter() - start,
                      device=device, divergence=watch.report(), out=out, progress=progress)


def finish_run(cfg: SimConfig, params: dict[str, torch.Tensor], y: torch.Tensor, history: list[dict], *,
               status: str, steps: int, seconds: float, device: torch.device, divergence: dict | None,
               out: Path, progress: bool = False) -> dict:
    """The end of a run, single or batched: theory target and certificate, the end-of-run reports
    (hierarchy, GNC, SQI, milestones, minority, Grams), params.pt and summary.json."""
    convex, skipped = convex_optimum(cfg, progress) if cfg.certificate else (None, "--no-certificate")
    target = theory_target(cfg, convex)
    summary = build_summary(cfg, history, target, status=status, steps=steps,
                            seconds=seconds, device=str(device), divergence=divergence)
    summary["certificate"] = certificate(cfg, convex, skipped, summary["final"].get("loss"))
    if cfg.hierarchy is not None:
        summary["hierarchy"] = hierarchy_summary(cfg, summary["final"])
    if (cfg.loss == "hug" or not etf_exists(cfg.K, cfg.feature_dim)) and summary["final"] and cfg.feature_dim > 1:
        summary["gnc"] = gnc_summary(cfg, summary["final"])
    if cfg.loss == "mse" and status != "diverged" and summary["final"]:
        summary["sqi"] = sqi_summary(params, y, cfg)
    summary["milestones"] = milestones(history)
    if is_imbalanced(cfg) and status != "diverged" and summary["final"]:
        certified = convex if convex is not None and convex.certificate.certified else None
        summary["minority"] = minority_summary(params, y, cfg, certified)
        if cfg.loss == "ce":
            summary["seli"] = seli_summary(params, y, cfg, certified)
    if status != "diverged" and target.applies and target.grams:
        summary["grams"] = gram_errors(params, y, cfg, target.grams)
    # the final iterate, for figures and notebooks (tensors only: torch.load(..., weights_only=True))
    atomic_write(out / "params.pt", lambda f: torch.save({k: v.detach().cpu() for k, v in params.items()}, f),
                 binary=True)
    write_json(out / "summary.json", summary)
    summary["run_dir"] = str(out)
    return summary
