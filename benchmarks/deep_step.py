"""The deep UFM's step (the Autograd stepper: autograd through the data loss, the decay added in place, then the
optimizer) and the hierarchical losses' steps (HXE, soft labels) against their matrix-product floors, measured in
one run.

    python -m benchmarks.deep_step                 # the default deep run: K = 10, n = 100, d = width = 512, L = 3
    python -m benchmarks.deep_step --device cuda

floor (deep): the products of one forward and backward pass — per layer X_l M_lᵀ forward, G_l M_l and G_lᵀ X_l
backward — on tensors of the run's shapes. floor (one layer, HXE / soft labels): H Wᵀ, Gᵀ H and G W.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import best_time, product_floor
from ufm.config import SimConfig
from ufm.fit.steppers import make_stepper
from ufm.model import init_params
from ufm.problem import resolve


def stepper_run(cfg: SimConfig, device: str, steps: int):
    problem = resolve(cfg)
    y, dev = problem.labels(device), torch.device(device)
    stepper = make_stepper([problem], [init_params(problem, dev, torch.float32)], y)

    def run() -> None:
        for _ in range(steps):
            stepper.step()
        if device == "cuda":
            torch.cuda.synchronize()
    return run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.deep_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    cases = [
        ("deep linear, L = 3, MSE (the default deep run)",
         SimConfig(K=10, n=100, d=512, depth=3, loss="mse", device=args.device)),
        ("deep ReLU, L = 3, CE", SimConfig(K=10, n=100, d=512, depth=3, act="relu", loss="ce", device=args.device)),
        ("HXE, cifar100 tree, one layer", SimConfig.from_dict({"K": 100, "n": 20, "d": 512, "loss": "hxe",
                                                              "hierarchy": "cifar100", "device": args.device})),
        ("soft labels, cifar100 tree, one layer", SimConfig.from_dict({"K": 100, "n": 20, "d": 512, "loss": "soft",
                                                                      "hierarchy": "cifar100",
                                                                      "device": args.device})),
    ]
    print(f"steps against their matrix-product floors on {args.device}, {torch.get_num_threads()} threads "
          f"(best of {args.repeats}, interleaved, {args.steps} steps each)")
    print(f"{'':<48}{'ms/step':>10}{'floor ms':>10}{'ratio':>8}")
    for label, cfg in cases:
        widths = [cfg.d] + [cfg.width] * (cfg.depth - 1)
        shapes = [(cfg.N, widths[i], widths[i + 1]) for i in range(cfg.depth - 1)] + [(cfg.N, widths[-1], cfg.K)]
        step, floor = stepper_run(cfg, args.device, args.steps), product_floor(shapes, args.device, args.steps)
        times = [(best_time(step, 1), best_time(floor, 1)) for _ in range(args.repeats)]  # interleaved: load hits both
        t, f = min(a for a, _ in times) / args.steps, min(b for _, b in times) / args.steps
        print(f"{label:<48}{1e3 * t:>10.3f}{1e3 * f:>10.3f}{t / f:>8.2f}")


if __name__ == "__main__":
    main()
