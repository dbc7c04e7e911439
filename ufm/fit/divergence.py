"""Divergence: the first non-finite loss of each configuration, found without a synchronization per step."""

from __future__ import annotations

import math

import torch


class DivergenceWatch:
    """Keeps the per-step losses of B configurations (a scalar, or a (B,) tensor per step) on the device
    and checks them in blocks, so a GPU run does not synchronize every step; finds, for each
    configuration, the exact first non-finite step and the last finite loss before it."""

    def __init__(self, B: int = 1, block: int = 64) -> None:
        self.block, self.pending, self.next_step = block, [], 0
        self.last: list[tuple[int, float] | None] = [None] * B
        self.bad: list[tuple[int, float] | None] = [None] * B

    def push(self, losses: torch.Tensor) -> bool:
        self.pending.append(losses.detach().reshape(-1))
        return self.check() if len(self.pending) >= self.block else False

    @property
    def diverged(self) -> list[bool]:
        return [b is not None for b in self.bad]

    def report(self, i: int = 0) -> dict | None:
        """Configuration i's first non-finite step and loss, and the last finite one before it (None if
        all finite)."""
        if self.bad[i] is None:
            return None
        last_step, last_loss = self.last[i] if self.last[i] else (None, None)
        return {"step": self.bad[i][0], "loss": self.bad[i][1], "last_finite_step": last_step,
                "last_finite_loss": last_loss}

    def flag(self, step: int, value: float, i: int = 0) -> None:
        """A non-finite value of configuration i seen outside the per-step losses (at an evaluation)."""
        if self.bad[i] is None:
            self.bad[i] = (step, value)

    def check(self) -> bool:
        """True once every configuration has seen a non-finite loss."""
        if self.pending:
            values = torch.stack(self.pending).double().cpu()  # (steps, B)
            for i in range(values.shape[1]):
                for j, value in enumerate(values[:, i].tolist() if self.bad[i] is None else []):
                    if not math.isfinite(value):
                        self.bad[i] = (self.next_step + j, value)
                        break
                    self.last[i] = (self.next_step + j, value)
            self.next_step += values.shape[0]
        self.pending = []
        return all(self.diverged)
