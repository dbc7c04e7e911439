"""Process bodies for the distributed tests (importable by torch.multiprocessing's spawn): each joins a gloo group,
runs several configurations in sequence and rank 0 saves what it saw."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ufm.config import SimConfig

# uneven shards for P = 2, 3, 4 (N = 13) and a class split across ranks; every fused loss and optimizer
CONFIGS = {
    "gd_mse": dict(loss="mse", lr=0.5, bias=True),
    "gd_ce": dict(loss="ce", lr=0.5, bias=True),
    "gd_ce_no_bias": dict(loss="ce", lr=0.5, bias=False),
    "sgd_ce": dict(loss="ce", optimizer="sgd", lr=0.2, momentum=0.9, bias=True),
    "sgd_mse_batch": dict(loss="mse", optimizer="sgd", lr=0.2, momentum=0.9, batch_size=6, bias=True),
    "adam_ce": dict(loss="ce", optimizer="adam", lr=1e-2, bias=True),
    "adam_mse": dict(loss="mse", optimizer="adam", lr=1e-2, bias=False),
}


def config(name: str) -> SimConfig:
    return SimConfig(counts=(5, 4, 4), d=4, wd=5e-3, steps=100, dtype="float64", device="cpu", certificate=False,
                     **CONFIGS[name])


def join(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)


def parity(rank: int, world: int, port: int, path: str) -> None:
    """Every configuration run with distributed=True; rank 0 saves {name: (losses, steps, params)}; plus the number
    of all-reduces in 10 fused GD steps, counted on rank 0."""
    import ufm
    from ufm.fit.shard import Shard
    from ufm.fit.sharded import sharded_stepper
    from ufm.model import init_params
    from ufm.problem import resolve

    join(rank, world, port)
    results = {}
    for name in CONFIGS:
        r = ufm.run(config(name), distributed=True, progress=False)
        results[name] = {"loss": torch.tensor([row["loss"] for row in r.history]),
                         "nc1": torch.tensor([row["nc1"] for row in r.history]),
                         "step": torch.tensor([row["step"] for row in r.history]), **r.params}
    # communication: the all-reduces of 10 fused GD steps
    problem = resolve(config("gd_ce"))
    shard = Shard(rank, world, problem.cfg.N)
    full = init_params(problem, torch.device("cpu"), torch.float64)
    params = {k: (v.detach()[shard.rows] if k == "H" else v.detach()).clone().requires_grad_(True)
              for k, v in full.items()}
    stepper = sharded_stepper(problem, params, problem.labels()[shard.rows], shard)
    calls, inner = [], dist.all_reduce

    def counting(*args, **kwargs):
        calls.append(args[0].numel())
        return inner(*args, **kwargs)

    dist.all_reduce = counting
    try:
        for _ in range(10):
            stepper.step()
    finally:
        dist.all_reduce = inner
    results["all_reduces"] = torch.tensor(calls)
    if rank == 0:
        torch.save(results, path)
    dist.destroy_process_group()


def dies(rank: int, world: int, port: int, path: str) -> None:
    """Rank 1 vanishes at its 20th step; rank 0 writes the RankFailed line it gets."""
    import ufm
    from ufm.distributed import RankFailed
    from ufm.fit import steppers

    join(rank, world, port)
    if rank == 1:
        inner, count = steppers.FusedGD.step, [0]

        def step(self):
            count[0] += 1
            if count[0] == 20:
                os._exit(1)
            return inner(self)

        steppers.FusedGD.step = step
    try:
        ufm.run(SimConfig(K=3, n=3, d=4, steps=200, device="cpu", certificate=False), distributed=True, progress=False)
    except RankFailed as e:
        with open(path, "w") as f:
            f.write(str(e))


def resumed(rank: int, world: int, port: int, root: str) -> None:
    """GD and Adam: 100 steps into root/NAME-full; 40 steps into root/NAME, then resumed there to 100 steps. Rank 0
    saves {NAME: {"full": params and last loss, "resumed": the same}} to root/results.pt."""
    import dataclasses

    import ufm

    join(rank, world, port)
    results = {}
    for name in ("gd_ce", "adam_ce"):
        cfg = config(name)
        full = ufm.run(cfg, f"{root}/{name}-full", distributed=True, progress=False)
        ufm.run(dataclasses.replace(cfg, steps=40), f"{root}/{name}", distributed=True, progress=False)
        again = ufm.run(cfg, f"{root}/{name}", distributed=True, progress=False, resume=True)
        results[name] = {k: {**r.params, "loss": torch.tensor(r.history[-1]["loss"])}
                         for k, r in (("full", full), ("resumed", again))}
    if rank == 0:
        torch.save(results, f"{root}/results.pt")
    dist.destroy_process_group()
