"""Many UFM configurations of the same shapes as one batched program: H (B, N, d), W (B, K, d), b (B, K)
stepped together by the closed-form GD step of ufm.fit.fused_gd (batched matrix products), each with its own
weight decays, learning rate, initialization scale and seed. Every configuration then gets the run
directory and summary a single run would (ufm.fit.loop.finish_run), equal to it up to rounding."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from ufm.config import SimConfig
from ufm.devices import resolve_device, resolve_dtype
from ufm.fit.fused_gd import GDStep, LossSpec
from ufm.fit.loop import DivergenceWatch, finish_run, fused_gd
from ufm.fit.measure import measure
from ufm.fit.schedule import log_schedule
from ufm.model import init_params, labels
from ufm.output.rundir import environment, write_csv, write_json

# what may differ between the configurations of one batch
PER_CONFIG = ("wd_W", "wd_H", "wd_b", "wd_M", "lr", "seed", "init_scale", "certificate")


def batch_key(cfg: SimConfig) -> tuple | None:
    """Configurations with the same key run as one batch; None: this one cannot be batched (only full-batch
    GD on the one-layer UFM under CE, label smoothing or MSE has the closed-form step)."""
    if not fused_gd(cfg) or cfg.tol > 0:  # an early stop on the gradient norm would split the batch
        return None
    return tuple(sorted((k, str(v)) for k, v in cfg.to_dict().items() if k not in PER_CONFIG))


def simulate_batch(cfgs: Sequence[SimConfig], outs: Sequence[Path | str], *, progress: bool = False) -> list[dict]:
    """Run the configurations `cfgs` (one batch_key) together; write each one's run directory under the
    matching entry of `outs`; return their summaries. A configuration that diverges stops being measured
    (its numbers are NaN and do not touch the others) and ends with status "diverged"."""
    keys = {batch_key(c) for c in cfgs}
    if None in keys or len(keys) != 1:
        raise ValueError("simulate_batch needs configurations of one batch_key (same shapes, loss and steps; "
                         "full-batch GD on the one-layer UFM under ce, ls or mse)")
    first = cfgs[0]
    device, dtype = resolve_device(first.device), resolve_dtype(first.dtype)
    outs = [Path(o) for o in outs]
    for cfg, out in zip(cfgs, outs, strict=True):
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", {**cfg.to_dict(), "device_used": str(device), "batched": len(cfgs),
                                         "environment": environment()})
    y = labels(first.class_counts, device)
    inits = [init_params(c, device, dtype) for c in cfgs]  # each configuration's own seed: the sequential start
    stacked = {k: torch.stack([p[k].detach() for p in inits]) for k in inits[0]}
    H, W, b = stacked["H"], stacked["W"], stacked.get("b")
    hyper = [torch.tensor([getattr(c, k) for c in cfgs], dtype=dtype, device=device)
             for k in ("lr", "wd_W", "wd_H", "wd_b")]
    stepper = GDStep(y, LossSpec(first.loss, first.smoothing, first.target_scale), *hyper)
    evaluate_at = set(log_schedule(first.steps, first.evals_per_decade))
    histories: list[list[dict]] = [[] for _ in cfgs]
    watch = DivergenceWatch(len(cfgs))
    start, status, step = time.perf_counter(), "ok", 0

    def config_params(i: int) -> dict[str, torch.Tensor]:
        return {k: v[i].detach().clone().requires_grad_(True) for k, v in stacked.items()}

    bar = tqdm(total=first.steps, disable=not progress, file=sys.stderr, desc=f"ufm ×{len(cfgs)}", unit="step",
               dynamic_ncols=True, mininterval=0.5)
    try:
        for step in range(first.steps + 1):
            if step in evaluate_at or step == first.steps:
                watch.check()
                for i, cfg in enumerate(cfgs):
                    if watch.diverged[i]:
                        continue
                    row = {"step": step, "seconds": time.perf_counter() - start, **measure(config_params(i), y, cfg)}
                    if math.isfinite(row["loss"]):
                        histories[i].append(row)
                        write_csv(outs[i] / "history.csv", histories[i])
                    else:  # the last update left non-finite parameters
                        watch.flag(step, row["loss"], i)
            if step == first.steps:
                break
            watch.push(stepper.step(H, W, b))
            bar.update()
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        bar.close()
    watch.check()
    seconds = time.perf_counter() - start
    # a diverged member kept stepping (with NaNs, touching no other member): its run ends, as a single run's
    # would, at its first non-finite step
    reports = [watch.report(i) for i in range(len(cfgs))]
    return [finish_run(cfg, config_params(i), y, histories[i], status="diverged" if reports[i] else status,
                       steps=reports[i]["step"] if reports[i] else step, seconds=seconds, device=device,
                       divergence=reports[i], out=outs[i]) for i, cfg in enumerate(cfgs)]
