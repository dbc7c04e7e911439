"""The fixed-frame reduction (ufm.fit.fixed_frame: HAFrame's H stepped in K + 1 coordinates per row) against
the full-space step (the Autograd stepper on H ∈ R^{N×d}), measured in one run on the same problem: time per step
and the distance between the two iterates after the timed steps.

    python -m benchmarks.fixed_frame                      # --K 100 --hierarchy cifar100, d = 512, n = 100
    python -m benchmarks.fixed_frame --steps 50 --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch

from ufm.config import SimConfig
from ufm.fit.fixed_frame import FixedFrame
from ufm.fit.steppers import Autograd
from ufm.model import init_params
from ufm.problem import class_tree, resolve


def time_steps(stepper, steps: int, device: torch.device) -> float:
    stepper.step()  # warm-up (allocations, first-call dispatch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        stepper.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fixed_frame", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hierarchy", default="cifar100")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    K = class_tree(args.hierarchy).K
    cfg = SimConfig.from_dict({"K": K, "n": args.n, "d": args.d, "loss": "haframe", "hierarchy": args.hierarchy,
                               "dtype": args.dtype, "device": args.device})
    problem, device = resolve(cfg), torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    y = problem.labels(device)
    full_t, reduced_t = [], []
    for _ in range(args.repeats):  # interleaved, so that load on a shared machine hits both alike
        full = Autograd(problem, init_params(problem, device, dtype), y)
        full_t.append(time_steps(full, args.steps, device))
        reduced = FixedFrame(problem, init_params(problem, device, dtype), y)
        reduced_t.append(time_steps(reduced, args.steps, device))
    H_full, H_reduced = full.params(0)["H"].detach(), reduced.params(0)["H"].detach()
    gap = float((H_full - H_reduced).abs().max() / H_full.abs().max())
    ref, new = min(full_t), min(reduced_t)
    print(f"fixed frame (HAFrame, {args.hierarchy}): K={cfg.K} n={cfg.n} d={cfg.d} N={cfg.N} {args.dtype}, GD, "
          f"{args.steps} steps on {device}, {torch.get_num_threads()} threads (best of {args.repeats}, interleaved)")
    print(f"{'':<44}{'ms/step':>10}{'ratio':>10}")
    print(f"{'reference: full-space step (N × d)':<44}{1e3 * ref:>10.3f}{1.0:>10.2f}")
    print(f"{'fixed-frame reduction (N × (K + 1))':<44}{1e3 * new:>10.3f}{new / ref:>10.3f}  ours / ref "
          f"({ref / new:.1f}× faster)")
    print(f"relative max difference of the iterates after {args.steps + 1} steps: {gap:.1e}")


if __name__ == "__main__":
    main()
