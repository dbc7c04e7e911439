"""Class counts from a specification: long-tailed (Zipf) counts and counts read from a file (`--counts`,
`--counts-file`).

- `zipf:S:NMAX` (`zipf_counts`): n_k = max(1, round(NMAX·k^(−S))) for k = 1…K, S >= 0 a decimal number, NMAX an
  integer from 1 to MAX_NMAX. "round" is round-half-up, ⌊x + ½⌋: 2.5 → 3 (Python's round() would give 2). The
  values are exact: x = NMAX·k^(−S) is compared with the half-integers in exact integer arithmetic wherever the
  float64 value lies near one (S = p/q read exactly from its decimal digits: x >= j + ½ ⟺ (2·NMAX)^q >= (2j+1)^q·k^p),
  so a tie such as NMAX = 5, S = 1, k = 2 (x = 2.5) always rounds up.
- a counts file (`read_counts_file`): one positive integer per line (decimal digits, UTF-8, an optional byte-order
  mark); blank lines and everything after a `#` are ignored; anything else is refused with its line number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

# NMAX at most this: the float64 pre-computation of NMAX·k^(−S) is then accurate to 1e-6 absolute, so only
# values within the exact check's window of a half-integer can round either way (and a class of 10⁹ samples
# is far beyond a UFM run)
MAX_NMAX = 10**9
# float64 NMAX·k^(−S) is within 4 ulps; values this close to a half-integer (relative) are decided exactly
NEAR_TIE_RTOL = 1e-12
_DECIMAL = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_COUNT = re.compile(r"\d+")
_NEGATIVE = re.compile(r"-\d+")


@dataclass(frozen=True)
class ZipfSpec:
    """`zipf:S:NMAX`, parsed; `counts(K)` gives the K counts.
    >>> ZipfSpec.parse("zipf:1:5").counts(4)
    (5, 3, 2, 1)
    """

    s: Fraction
    nmax: int
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> ZipfSpec:
        """From "zipf:S:NMAX" (ValueError saying what is wrong otherwise)."""
        parts = text.strip().split(":")
        if len(parts) != 3 or parts[0].strip().lower() != "zipf":
            raise ValueError(f"expected zipf:S:NMAX (e.g. zipf:1.1:1000), got {text!r}")
        s_text, n_text = parts[1].strip(), parts[2].strip()
        if not _DECIMAL.fullmatch(s_text):
            raise ValueError(f"zipf:S:NMAX: S must be a finite decimal number >= 0 (e.g. 1.1), got {s_text!r}")
        if not _COUNT.fullmatch(n_text):
            raise ValueError(f"zipf:S:NMAX: NMAX must be an integer from 1 to 10^9, got {n_text!r}")
        s, nmax = Fraction(s_text), int(n_text)
        if not 1 <= nmax <= MAX_NMAX:
            raise ValueError(f"zipf:S:NMAX: NMAX must be an integer from 1 to 10^9, got {n_text!r}")
        return cls(s, nmax, text.strip())

    def counts(self, K: int) -> tuple[int, ...]:
        return zipf_counts(K, self.s, self.nmax)


def is_zipf(text: object) -> bool:
    """Whether a --counts value is a Zipf specification (it starts with "zipf:").
    >>> is_zipf("zipf:1:100"), is_zipf("5,5,2"), is_zipf((5, 5))
    (True, False, False)
    """
    return isinstance(text, str) and text.strip().lower().startswith("zipf:")


def _at_least_half(k: int, j: int, s: Fraction, nmax: int) -> bool:
    """Exactly: NMAX·k^(−s) >= j + ½, i.e. (2·NMAX)^q >= (2j + 1)^q·k^p for s = p/q (both sides positive)."""
    p, q = s.numerator, s.denominator
    digits = q * (math.log10(2 * nmax) + math.log10(2 * j + 1)) + p * math.log10(k)
    if digits < 200_000:  # exact integers (milliseconds)
        return (2 * nmax) ** q >= (2 * j + 1) ** q * k**p
    # a denominator this large (S with many decimals): x is irrational unless k is a perfect q-th power (k >= 2^q,
    # beyond any K), so it is never a tie; decide with 120 digits
    from decimal import Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = 120
        x = Decimal(nmax) * (-(Decimal(s.numerator) / Decimal(s.denominator)) * Decimal(k).ln()).exp()
        return x >= Decimal(2 * j + 1) / 2


def zipf_counts(K: int, s: float | str | Fraction, nmax: int) -> tuple[int, ...]:
    """n_k = max(1, ⌊NMAX·k^(−s) + ½⌋) for k = 1…K (round half up), exactly (module docstring).

    `s` >= 0 (a float is taken at its exact binary value; a string or Fraction at its decimal value), `nmax` an
    integer from 1 to MAX_NMAX, K >= 2. Example: 5/2 = 2.5 rounds up, 5/4 = 1.25 down, and the tail is 1:
    >>> zipf_counts(6, 1, 5)
    (5, 3, 2, 1, 1, 1)
    >>> zipf_counts(3, "0.5", 8)   # 8/√2 = 5.66, 8/√3 = 4.62
    (8, 6, 5)
    """
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 2:
        raise ValueError(f"K must be an integer >= 2, got {K!r}")
    if isinstance(nmax, bool) or not isinstance(nmax, (int, np.integer)) or not 1 <= nmax <= MAX_NMAX:
        raise ValueError(f"nmax must be an integer from 1 to 10^9, got {nmax!r}")
    try:
        s = Fraction(s)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"s must be a finite number >= 0, got {s!r}") from None
    if s < 0:
        raise ValueError(f"s must be a finite number >= 0, got {float(s)}")
    K, nmax = int(K), int(nmax)
    k = np.arange(1, K + 1, dtype=np.float64)
    x = nmax * k ** (-float(s))
    low = np.floor(x)
    n = low + (x - low >= 0.5)
    # near a half-integer the float64 value cannot decide: exactly (only x >= 1.5 − window can give more than 1)
    frac = x - low
    near = np.flatnonzero((np.abs(frac - 0.5) <= NEAR_TIE_RTOL * x + 1e-300) & (x >= 1.0))
    for i in near:
        j = int(low[i])
        n[i] = j + 1 if _at_least_half(i + 1, j, s, nmax) else j
    return tuple(int(v) for v in np.maximum(n, 1))


def read_counts_file(path: str | Path) -> tuple[int, ...]:
    """The class counts in a file: one positive integer per line; blank lines and `#` comments ignored (ValueError
    naming the file and the line otherwise).
    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("# head\\n100\\n\\n10  # tail\\n5\\n")
    >>> read_counts_file(f.name); os.unlink(f.name)
    (100, 10, 5)
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None
    counts = []
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.split("#", 1)[0].strip()
        if not value:
            continue
        if _COUNT.fullmatch(value) and int(value) >= 1:
            counts.append(int(value))
        elif _COUNT.fullmatch(value) or _NEGATIVE.fullmatch(value):
            raise ValueError(f"{path}, line {number}: a count must be >= 1, got {value}")
        else:
            raise ValueError(f"{path}, line {number}: expected one positive integer per line, got {value!r}")
    if len(counts) < 2:
        raise ValueError(f"{path}: needs at least 2 classes (one count per line), found {len(counts)}")
    return tuple(counts)
