"""When to measure: a log-spaced set of steps (metrics are costlier than a step, and change on a log scale)."""

from __future__ import annotations

import numpy as np


def log_schedule(steps: int, per_decade: int = 10) -> list[int]:
    """Steps 0, 1, 2, … spaced ~per_decade per factor of 10, always including 0 and `steps`."""
    if steps <= 0:
        return [0]
    if per_decade * np.log10(steps) >= steps:  # denser than every step (--evals-per-decade 1e9): every step
        return list(range(steps + 1))
    points = np.round(np.logspace(0, np.log10(steps), int(np.ceil(per_decade * np.log10(steps))) + 1))
    return sorted({0, steps, *(int(p) for p in points if p <= steps)})
