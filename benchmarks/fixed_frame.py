"""The fixed-frame steppers (ufm.fit.fixed_frame) against the full-space step they replace, measured in one run on
the same problem (HAFrame, CIFAR-100's tree: K = 100, d = 512, N = 10 000, full-batch GD):

- per step: the full-space Autograd step on H ∈ R^{N×d} (the reference), FixedFrame (autograd on K + 1
  coordinates per row) and LogitGD (GD on the logits, one N×K×K product), interleaved, best of --repeats;
- the whole run `ufm.run` of `--K 100 --loss haframe --hierarchy cifar100` (--run-steps steps, the default 5000
  is the command's own), with the reduction switched off (the old path) and on, and where they end.

    python -m benchmarks.fixed_frame                         # about 4 minutes on 2 cores: the whole runs dominate
    python -m benchmarks.fixed_frame --run-steps 0           # the steps alone, ~20 s
    python -m benchmarks.fixed_frame --steps 50 --device cuda
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch

from ufm.config import SimConfig
from ufm.fit import fixed_frame
from ufm.fit.fixed_frame import FixedFrame, LogitGD
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


@contextmanager
def full_space() -> Iterator[None]:
    """The old path: make_stepper sees no reducible run (fixed_frame.reducible is restored after)."""
    reducible = fixed_frame.reducible
    fixed_frame.reducible = lambda cfg: False
    try:
        yield
    finally:
        fixed_frame.reducible = reducible


def whole_runs(cfg: SimConfig) -> tuple[dict, dict]:
    """{seconds, loss, H} of ufm.run on the old path, then on the new one (the default thread rule for both)."""
    import ufm

    out = []
    for old in (True, False):
        with full_space() if old else nullcontext():
            start = time.perf_counter()
            result = ufm.run(cfg, progress=False)
        out.append({"seconds": time.perf_counter() - start, "loss": result.final["loss"], "H": result.params["H"]})
    return out[0], out[1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fixed_frame", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hierarchy", default="cifar100")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--steps", type=int, default=100, help="timed steps per stepper and repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--run-steps", type=int, default=5000, help="steps of the whole runs (0: no whole runs)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    K = class_tree(args.hierarchy).K
    settings = {"K": K, "n": args.n, "d": args.d, "loss": "haframe", "hierarchy": args.hierarchy,
                "dtype": args.dtype, "device": args.device}
    cfg = SimConfig.from_dict(settings)
    problem, device = resolve(cfg), torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    y = problem.labels(device)
    kinds = (("reference: full-space step (N × d)", Autograd), ("FixedFrame (N × (K + 1), autograd)", FixedFrame),
             ("LogitGD (N × K logits, one N×K×K product)", LogitGD))
    times: dict[str, list[float]] = {name: [] for name, _ in kinds}
    last = {}
    for _ in range(args.repeats):  # interleaved, so that load on a shared machine hits all alike
        for name, kind in kinds:
            last[name] = kind(problem, init_params(problem, device, dtype), y)
            times[name].append(time_steps(last[name], args.steps, device))
    H_ref = last[kinds[0][0]].params(0)["H"].detach()
    print(f"fixed frame (HAFrame, {args.hierarchy}): K={cfg.K} n={cfg.n} d={cfg.d} N={cfg.N} {args.dtype}, GD, "
          f"{args.steps} steps on {device}, {torch.get_num_threads()} threads (best of {args.repeats}, interleaved)")
    print(f"{'':<46}{'ms/step':>10}{'ref / ours':>12}{'max |ΔH|/max|H|':>18}")
    ref = min(times[kinds[0][0]])
    for name, _ in kinds:
        best = min(times[name])
        gap = float((last[name].params(0)["H"].detach() - H_ref).abs().max() / H_ref.abs().max())
        print(f"{name:<46}{1e3 * best:>10.3f}{ref / best:>12.2f}{gap:>18.1e}")
    if args.run_steps > 0:
        run_cfg = SimConfig.from_dict({**settings, "steps": args.run_steps})
        old, new = whole_runs(run_cfg)
        gap = float((old["H"] - new["H"]).abs().max() / old["H"].abs().max())
        print(f"\nwhole run (ufm.run, {args.run_steps} steps, measurements and checks included, thread rule):")
        print(f"{'old path (full space)':<30}{old['seconds']:>9.1f} s   loss {old['loss']:.9g}")
        print(f"{'new path (LogitGD)':<30}{new['seconds']:>9.1f} s   loss {new['loss']:.9g}")
        print(f"old / new = {old['seconds'] / new['seconds']:.2f}; the end points differ by {gap:.1e} "
              "(max |ΔH|/max|H|)")


if __name__ == "__main__":
    main()
