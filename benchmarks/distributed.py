"""Scaling of a data-parallel UFM step (ufm.distributed): fused GD under CE on P processes against one, measured in
one run, as the efficiency t1/(P·t_P) (1: perfect scaling; the rest is the all-reduce of Kd + K + 1 values per step
and the processes' share of the machine). On the CPU with gloo (one thread per process) or, with --device cuda, one
GPU per process with NCCL.

    python -m benchmarks.distributed                       # K = 1000, d = 512, n = 8: 2 processes against 1
    python -m benchmarks.distributed --K 100 --d 64 --n 20 --steps 3   # seconds
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, sizes: tuple[int, int, int, int], device: str, path: str) -> None:
    from ufm.config import SimConfig
    from ufm.fit.shard import Shard
    from ufm.fit.sharded import sharded_stepper
    from ufm.model import init_params
    from ufm.problem import resolve

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank, world_size=world)
    K, n, d, steps = sizes
    dev = torch.device("cuda", rank) if device == "cuda" else torch.device("cpu")
    problem = resolve(SimConfig(K=K, n=n, d=d, loss="ce", wd=5e-4, dtype="float32" if device == "cuda" else "float64",
                                device=device, certificate=False))
    shard = Shard(rank, world, problem.cfg.N)
    full = init_params(problem, dev, torch.float32 if device == "cuda" else torch.float64)
    params = {k: (v.detach()[shard.rows] if k == "H" else v.detach()).clone() for k, v in full.items()}
    del full
    stepper = sharded_stepper(problem, params, problem.labels(dev)[shard.rows], shard)
    stepper.step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        stepper.step()
    if device == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    if rank == 0:
        Path(path).write_text(str((time.perf_counter() - start) / steps))
    dist.destroy_process_group()


def seconds_per_step(world: int, K: int, n: int, d: int, steps: int, device: str = "cpu") -> float:
    """Seconds per fused GD step of the K-class UFM (n per class, d features) on `world` processes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "t")
        mp.spawn(_worker, args=(world, _free_port(), (K, n, d, steps), device, path), nprocs=world, join=True)
        return float(Path(path).read_text())


def scaling(K: int, n: int, d: int, steps: int, world: int = 2, device: str = "cpu") -> dict[str, float]:
    """{"t1", "tP", "efficiency" = t1/(P·tP), "values" reduced per step}."""
    t1 = seconds_per_step(1, K, n, d, steps, device)
    tp = seconds_per_step(world, K, n, d, steps, device)
    return {"t1": t1, "tP": tp, "efficiency": t1 / (world * tp), "values": K * d + K + 1}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--K", type=int, default=1000)
    p.add_argument("--n", type=int, default=8, help="samples per class (N = K·n)")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args(argv)
    r = scaling(args.K, args.n, args.d, args.steps, args.processes, args.device)
    P = args.processes
    print(f"fused GD step, CE, K = {args.K}, d = {args.d}, N = {args.K * args.n}, {args.device} "
          f"({'gloo, 1 thread' if args.device == 'cpu' else 'NCCL'} per process), all-reduce of {r['values']} values")
    print(f"  1 process:  {r['t1'] * 1e3:.1f} ms/step")
    print(f"  {P} processes: {r['tP'] * 1e3:.1f} ms/step")
    print(f"  efficiency t1/({P}·t{P}) = {r['efficiency']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
