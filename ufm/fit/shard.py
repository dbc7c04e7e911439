"""The shard of one process in a data-parallel UFM run (ufm.distributed): which rows of H it holds, and the sum over
the processes that makes its statistics those of all N samples."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    """Rank `rank` of `world` processes holds the contiguous rows [start, stop) of the N rows of H, in the order of
    the problem's labels (grouped by class): rank r's rows are ⌊rN/P⌋ … ⌊(r + 1)N/P⌋ − 1, so the shards differ by
    at most one row, N need not divide by P, and a class may be split across ranks. W and b are replicated.
    >>> [Shard(r, 3, 10).rows for r in range(3)]
    [slice(0, 3, None), slice(3, 6, None), slice(6, 10, None)]
    """

    rank: int
    world: int
    N: int

    @property
    def start(self) -> int:
        return self.rank * self.N // self.world

    @property
    def stop(self) -> int:
        return (self.rank + 1) * self.N // self.world

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def main(self) -> bool:
        """The process that writes the run directory (rank 0)."""
        return self.rank == 0

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of `t` over the processes (one all-reduce; `t` itself is left as it was)."""
        out = t.detach().clone().contiguous()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def gather_rows(self, part: torch.Tensor) -> torch.Tensor | None:
        """The shards' rows (n_r, …) stacked in rank order on rank 0 (N, …); None on the other ranks. The shards
        are padded to the largest one for the collective (gloo and NCCL gather equal shapes)."""
        largest = self.N - (self.world - 1) * self.N // self.world
        padded = part.new_zeros((largest, *part.shape[1:]))
        padded[:len(part)] = part
        pieces = [torch.empty_like(padded) for _ in range(self.world)] if self.main else None
        dist.gather(padded, pieces, dst=0)
        if not self.main:
            return None
        return torch.cat([p[:Shard(r, self.world, self.N).size] for r, p in enumerate(pieces)])
