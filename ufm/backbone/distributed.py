"""Data parallelism with torch DDP under `torchrun`: process-group set-up, the shard of each process,
and the sum over processes that makes the NC statistics those of the whole dataset."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ufm.devices import resolve_device


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """The process that writes the run directory and checkpoints."""
        return self.rank == 0

    @property
    def shard(self) -> slice:
        """This process's rows: every world-th one from its rank (a partition, no padding, so the reduced
        statistics count each sample exactly once; a slice, so a single process indexes without a copy)."""
        return slice(self.rank, None, self.world)

    def reduce(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Sum over processes (None in a single process)."""
        return all_reduce_sum if self.world > 1 else None


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def setup(device: str) -> Context:
    """Join the process group that torchrun describes (WORLD_SIZE > 1), else a single process. Each
    process uses the GPU of its LOCAL_RANK (NCCL), or the CPU (gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(0, 1, resolve_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device)
    if chosen.type == "cuda":
        torch.cuda.set_device(local)
        chosen = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Context(rank, world, chosen)


def sync_buffers(ctx: Context, module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics). DDP broadcasts them at the
    start of each training forward, so after the last step each process holds the statistics of its
    own last batch; the shards must be measured with one and the same network."""
    if ctx.world > 1:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def barrier(ctx: Context) -> None:
    if ctx.world > 1:
        dist.barrier()


def teardown(ctx: Context) -> None:
    if ctx.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
