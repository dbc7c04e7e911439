"""The thread rule (ufm.fit.threads) against torch's default (all cores), on an idle machine and with a CPU-bound
process beside it, measured in one run: the wall time of a whole default-sized run.

    python -m benchmarks.threads                  # --K 10 --loss ce --wd 5e-4 --steps 1000, no certificate
    python -m benchmarks.threads --steps 5000
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

import torch


def busy(stop) -> None:  # a CPU-bound neighbour
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def timed_run(steps: int, K: int, threads: int | None) -> float:
    import ufm
    from ufm.config import SimConfig

    cfg = SimConfig(K=K, loss="ce", wd=5e-4, steps=steps, certificate=False)
    start = time.perf_counter()
    ufm.run(cfg, progress=False, threads=threads)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.threads", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--K", type=int, default=10)
    args = p.parse_args(argv)
    os.environ.pop("OMP_NUM_THREADS", None)  # the rule defers to an explicit setting: measure it without one
    cores = os.cpu_count() or 1
    timed_run(50, args.K, None)  # warm-up (imports, first-call dispatch)
    rows = []
    for label, loaded in (("idle", False), ("one CPU-bound process beside it", True)):
        stop = multiprocessing.Event()
        neighbour = multiprocessing.Process(target=busy, args=(stop,), daemon=True) if loaded else None
        if neighbour is not None:
            neighbour.start()
            time.sleep(1.0)
        try:
            default = timed_run(args.steps, args.K, cores)
            rule = timed_run(args.steps, args.K, None)
        finally:
            stop.set()
            if neighbour is not None:
                neighbour.join()
        rows.append((label, default, rule))
    size = 100 * args.K * 512 * args.K
    print(f"whole run --K {args.K} --loss ce --wd 5e-4 --steps {args.steps} (N·d·K = {size:.2g}), {cores} cores, "
          f"torch {torch.__version__}")
    print(f"{'machine':<34}{'all cores s':>12}{'rule s':>10}{'all / rule':>12}")
    for label, default, rule in rows:
        print(f"{label:<34}{default:>12.2f}{rule:>10.2f}{default / rule:>12.2f}")
    print(f"rule: loaded / idle = {rows[1][2] / rows[0][2]:.2f}; "
          f"all cores: loaded / idle = {rows[1][1] / rows[0][1]:.2f}")


if __name__ == "__main__":
    main()
