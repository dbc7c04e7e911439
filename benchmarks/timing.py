"""Timing helpers shared by the benchmarks: best-of-n wall clock and a log-log slope."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence


def best_time(f: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` calls of f (after one warm-up call), in seconds."""
    f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def loglog_slope(xs: Sequence[float], ts: Sequence[float]) -> float:
    """Least-squares slope of log t against log x: time ∝ x^slope."""
    lx, lt = [math.log(x) for x in xs], [math.log(t) for t in ts]
    mx, mt = sum(lx) / len(lx), sum(lt) / len(lt)
    return sum((a - mx) * (b - mt) for a, b in zip(lx, lt, strict=True)) / sum((a - mx) ** 2 for a in lx)
