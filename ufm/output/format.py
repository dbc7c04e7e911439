"""How numbers are printed in the end-of-run table and the checks' lines."""

from __future__ import annotations

import math


def fmt(x: float | None) -> str:
    """Six significant digits in a readable range, scientific outside it; — for missing values.
    >>> fmt(0.5), fmt(1e-7), fmt(None)
    ('0.5', '1.000e-07', '—')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.6g}" if x == 0 or 1e-3 <= abs(x) < 1e6 else f"{x:.3e}"
