"""Divergence: the first non-finite loss of each configuration — or the first loss GROWTH times its first value
(a loss that grew by orders of magnitude is divergence even while it is finite: Adam at lr 1e6 ends at 3.7e25) —
found without a synchronization per step."""

from __future__ import annotations

import math

import torch

# a loss above GROWTH × max(|first loss|, 1) has diverged: the objective starts at F(init) and every optimizer
# here is meant to decrease it; a million-fold growth is not a transient
GROWTH = 1e6


class DivergenceWatch:
    """Keeps the per-step losses of B configurations (a scalar, or a (B,) tensor per step) on the device
    and checks them in blocks, so a GPU run does not synchronize every step; finds, for each
    configuration, the exact first non-finite step and the last finite loss before it."""

    def __init__(self, B: int = 1, block: int = 64) -> None:
        self.block, self.pending, self.next_step = block, [], 0
        self.last: list[tuple[int, float] | None] = [None] * B
        self.bad: list[tuple[int, float] | None] = [None] * B
        self.first: list[float | None] = [None] * B  # each configuration's first finite loss

    def is_bad(self, value: float, i: int = 0) -> bool:
        """Non-finite, or GROWTH times above configuration i's first loss (the first finite value seen sets it)."""
        if not math.isfinite(value):
            return True
        if self.first[i] is None:
            self.first[i] = value
        return value > GROWTH * max(abs(self.first[i]), 1.0)

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
        value = self.bad[i][1]
        grew = math.isfinite(value) and self.first[i] is not None
        reason = (f"the loss grew {value / max(abs(self.first[i]), 1.0):.1e}× (from {self.first[i]:.6g} to {value:.6g})"
                  if grew else f"the loss is {value}")
        return {"step": self.bad[i][0], "loss": value, "last_finite_step": last_step,
                "last_finite_loss": last_loss, "reason": reason}

    def flag(self, step: int, value: float, i: int = 0) -> None:
        """A bad value (`is_bad`) of configuration i seen outside the per-step losses (at an evaluation)."""
        if self.bad[i] is None:
            self.bad[i] = (step, value)

    def check(self) -> bool:
        """True once every configuration has seen a non-finite loss."""
        if self.pending:
            values = torch.stack(self.pending).double().cpu()  # (steps, B)
            for i in range(values.shape[1]):
                for j, value in enumerate(values[:, i].tolist() if self.bad[i] is None else []):
                    if self.is_bad(value, i):
                        self.bad[i] = (self.next_step + j, value)
                        break
                    self.last[i] = (self.next_step + j, value)
            self.next_step += values.shape[0]
        self.pending = []
        return all(self.diverged)
