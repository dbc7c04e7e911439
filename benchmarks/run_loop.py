"""The one run loop with a single configuration (a batch of one: ufm.fit.loop.fit over a FusedGD stepper)
against the single-run loop it replaced, measured in one run on the same problem.

    python -m benchmarks.run_loop                  # the default run's shapes: K = 10, n = 100, d = 512, float32
    python -m benchmarks.run_loop --steps 2000 --device cuda

reference: the loop of ufm.simulation.simulate before the one loop (GDStep on views of the parameters, the
divergence watch, the progress bar's update), written out here; both measure on the same log schedule.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import best_time
from ufm.config import SimConfig
from ufm.fit.divergence import DivergenceWatch
from ufm.fit.fused_gd import GDStep, LossSpec
from ufm.fit.loop import fit
from ufm.fit.measure import measure
from ufm.fit.schedule import log_schedule
from ufm.fit.steppers import FusedGD
from ufm.model import init_params
from ufm.problem import resolve


def ours(cfg: SimConfig, device: torch.device):
    problem = resolve(cfg)
    y = problem.labels(device)

    def run() -> None:
        params = init_params(problem, device, torch.float32)
        fit([problem], FusedGD([problem], [params], y), y)
    return run


def reference(cfg: SimConfig, device: torch.device):
    """The replaced single-run loop (its per-step work and its measurements), without writing files."""
    from tqdm import tqdm

    problem = resolve(cfg)
    y = problem.labels(device)

    def run() -> None:
        params = init_params(problem, device, torch.float32)
        view = {k: params[k].unsqueeze(0) if k in params else None for k in ("H", "W", "b")}
        hyper = [torch.tensor([v], device=device) for v in (cfg.lr, cfg.wd_W, cfg.wd_H, cfg.wd_b)]
        stepper = GDStep(y, LossSpec(cfg.loss.name), *hyper)
        evaluate_at, history, watch = set(log_schedule(cfg.steps, cfg.evals_per_decade)), [], DivergenceWatch()
        bar = tqdm(total=cfg.steps, disable=True)
        for step in range(cfg.steps + 1):
            stop = step == cfg.steps
            if step in evaluate_at or stop:
                if watch.check():
                    break
                stepper.sync(view["H"])
                history.append({"step": step, **measure(params, y, problem)})
                if stop:
                    break
            if watch.push(stepper.step(view["H"], view["W"], view["b"])):
                break
            bar.update()
        stepper.sync(view["H"])
    return run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_loop", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--K", type=int, default=10)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--loss", default="ce")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    cfg = SimConfig(K=args.K, n=args.n, d=args.d, loss=args.loss, steps=args.steps, device=args.device)
    device = torch.device(args.device)
    # interleaved, so that load on a shared machine hits both alike
    t_ref, t_ours = [], []
    for _ in range(args.repeats):
        t_ref.append(best_time(reference(cfg, device), 1))
        t_ours.append(best_time(ours(cfg, device), 1))
    ref, new = min(t_ref), min(t_ours)
    print(f"run loop, B = 1: K={cfg.K} n={cfg.n} d={cfg.d} {cfg.loss.name}, {cfg.steps} steps on {device}, "
          f"{torch.get_num_threads()} threads (best of {args.repeats}, interleaved)")
    print(f"{'':<40}{'ms/step':>10}{'ratio':>10}")
    print(f"{'reference (the replaced single loop)':<40}{1e3 * ref / cfg.steps:>10.3f}{1.0:>10.2f}")
    print(f"{'the one loop (fit + FusedGD, B = 1)':<40}{1e3 * new / cfg.steps:>10.3f}{new / ref:>10.3f}  ours / ref")


if __name__ == "__main__":
    main()
