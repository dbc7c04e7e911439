"""Blocks and tiles within a memory budget (DESIGN §8): the one primitive that steppers, losses and measurements
share so that no N×K logit matrix (or its gradient, or a probability matrix) and no K×K matrix is held in full
beyond the budget.

- `memory_budget(device)`: the bytes that the N×K- or K×K-shaped temporaries of one computation may take at once.
  Default: `DEFAULT_FRACTION` of the device's free memory, capped at `DEFAULT_CAP` of the device's kind (on a CPU
  larger blocks gain nothing: the products of a block of a thousand rows already run at the speed of one large
  product, measured in benchmarks/many_classes.py; a GPU needs larger blocks to keep its per-block launches few).
  Set it for the process with `set_memory_budget(bytes)`, for a `with` block with `budget(bytes)`, or with the
  environment variable UFM_MEMORY_BUDGET ("512MiB", "2GB", "1e9").
- `block_rows(cols, ...)`: how many rows of a (rows × cols) temporary fit, `copies` of them at once;
  `row_blocks(N, rows)` the slices; `logit_blocks(X, W, b)` the logits X Wᵀ + b one block of rows at a time.
- `tile_size(K, ...)`, `pair_tiles(K, tile)`: square tiles covering the pairs i <= j of a K×K matrix (upper
  triangle, diagonal tiles included), for pairwise quantities (cosines, distances, energies) of K rows.

>>> with budget(4096):                      # 4 KiB: 128 float64 values per block
...     block_rows(32, itemsize=8)          # rows of 32 float64 columns
16
>>> [(s.start, s.stop) for s in row_blocks(5, 2)]
[(0, 2), (2, 4), (4, 5)]
>>> [(i.start, j.start) for i, j in pair_tiles(5, 2)]
[(0, 0), (0, 2), (0, 4), (2, 2), (2, 4), (4, 4)]
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

DEFAULT_FRACTION = 0.25  # of the free memory of the device
DEFAULT_CAP = {"cpu": 512 * 2**20, "cuda": 8 * 2**30, "mps": 2 * 2**30}  # bytes, by the device's kind
MIN_BUDGET = 1 << 10  # a budget below 1 KiB is a mistake, not a setting
# the largest tile side on a CPU: a tile's elementwise work then stays in cache (measured, one thread: 256-row tiles
# 1.3–4× faster than 1000-row ones for the energies at K = 1000…2000, d = 8…512, and 2.8× faster than 3344-row ones
# for the pair statistics at K = 8192, d = 256); on a GPU the budget alone decides
CPU_TILE = 256
ENV = "UFM_MEMORY_BUDGET"

_override: int | None = None
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str | int | float) -> int:
    """A size in bytes from "512MiB", "2GB", "1.5g", "1e9" or a number (ValueError otherwise).
    >>> parse_bytes("512MiB"), parse_bytes("2GB"), parse_bytes(4096)
    (536870912, 2000000000, 4096)
    """
    if isinstance(text, bool):
        raise ValueError(f"a memory size must be a number of bytes or a string like '512MiB', got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(f"a memory size must look like 512MiB, 2GB or 1e9 (bytes), got {text!r}")
        value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not value >= MIN_BUDGET or value != value or value == float("inf"):
        raise ValueError(f"a memory budget must be at least {MIN_BUDGET} bytes, got {text!r}")
    return int(value)


def set_memory_budget(nbytes: int | str | None) -> None:
    """Set the budget of this process (bytes, or a string such as "1GiB"); None restores the default.
    >>> set_memory_budget("1MiB"); memory_budget()
    1048576
    >>> set_memory_budget(None)
    """
    global _override
    _override = None if nbytes is None else parse_bytes(nbytes)


@contextmanager
def budget(nbytes: int | str | None) -> Iterator[None]:
    """The budget for the duration of a `with` block (None: the default), then the previous one again.
    >>> with budget("64KiB"):
    ...     memory_budget()
    65536
    """
    global _override
    before = _override
    set_memory_budget(nbytes)
    try:
        yield
    finally:
        _override = before


def free_bytes(device: torch.device | str | None = None) -> int | None:
    """Free memory of the device: the GPU's free memory, or MemAvailable of /proc/meminfo; None when unknown.
    >>> free_bytes("cpu") is None or free_bytes("cpu") > 0
    True
    """
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget(device: torch.device | str | None = None) -> int:
    """The bytes the block-shaped temporaries of one computation may take on `device`: the process's setting
    (`set_memory_budget`, `budget`), else UFM_MEMORY_BUDGET, else min(DEFAULT_FRACTION · free memory, DEFAULT_CAP of
    the device's kind).
    >>> memory_budget("cpu") <= DEFAULT_CAP["cpu"] or os.environ.get(ENV) is not None
    True
    """
    if _override is not None:
        return _override
    if os.environ.get(ENV):
        return parse_bytes(os.environ[ENV])
    kind = torch.device(device if device is not None else "cpu").type
    cap = DEFAULT_CAP.get(kind, DEFAULT_CAP["cpu"])
    free = free_bytes(device)
    return cap if free is None else max(MIN_BUDGET, min(cap, int(DEFAULT_FRACTION * free)))


def block_rows(cols: int, *, itemsize: int = 4, copies: int = 1, nbytes: int | None = None,
               device: torch.device | str | None = None) -> int:
    """Rows of a (rows × cols) temporary, `copies` of them alive at once, that fit in the budget (`nbytes`, default
    `memory_budget(device)`); at least 1.
    >>> block_rows(1000, itemsize=8, copies=2, nbytes=160_000)
    10
    """
    nbytes = memory_budget(device) if nbytes is None else nbytes
    return max(1, nbytes // max(1, cols * itemsize * copies))


def row_blocks(N: int, rows: int) -> Iterator[slice]:
    """Consecutive slices of at most `rows` rows covering 0..N−1 (one empty-free slice per block).
    >>> list(row_blocks(3, 10))
    [slice(0, 3, None)]
    """
    rows = max(1, int(rows))
    for start in range(0, N, rows):
        yield slice(start, min(N, start + rows))


def logit_blocks(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None, *, copies: int = 1,
                 rows: int | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, Z_rows) with Z = X Wᵀ + b computed one block of rows at a time (`rows` per block, default: what fits
    `copies` N×K-shaped temporaries in the budget). The logits of the whole matrix are never held at once.
    >>> X, W = torch.randn(5, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    >>> Z = torch.cat([z for _, z in logit_blocks(X, W, rows=2)])
    >>> bool(torch.allclose(Z, X @ W.T))
    True
    """
    if rows is None:
        rows = block_rows(W.shape[0], itemsize=X.element_size(), copies=copies, device=X.device)
    for s in row_blocks(X.shape[0], rows):
        Z = X[s] @ W.T
        yield s, (Z if b is None else Z.add_(b))


def tile_size(K: int, *, itemsize: int = 8, copies: int = 4, nbytes: int | None = None,
              device: torch.device | str | None = None) -> int:
    """The side t of square t×t tiles of a K×K pairwise quantity, `copies` tile-sized temporaries at once, within
    the budget (at least 1, at most K; on a CPU at most CPU_TILE, where a tile's elementwise work stays in cache).
    >>> tile_size(10_000, itemsize=8, copies=1, nbytes=8 * 100 * 100), tile_size(10_000, device="cpu")
    (100, 256)
    """
    nbytes = memory_budget(device) if nbytes is None else nbytes
    cap = CPU_TILE if torch.device(device if device is not None else "cpu").type == "cpu" else K
    return max(1, min(K, cap, int((nbytes / (itemsize * copies)) ** 0.5)))


def pair_tiles(K: int, tile: int) -> Iterator[tuple[slice, slice]]:
    """Tiles (I, J) with I.start <= J.start covering every pair i <= j of 0..K−1 once (the diagonal tiles hold
    the pairs i <= j of their block and the ones below; callers mask what they need).
    >>> [(I.start, I.stop, J.start, J.stop) for I, J in pair_tiles(3, 2)]
    [(0, 2, 0, 2), (0, 2, 2, 3), (2, 3, 2, 3)]
    """
    tile = max(1, int(tile))
    for i in range(0, K, tile):
        for j in range(i, K, tile):
            yield slice(i, min(K, i + tile)), slice(j, min(K, j + tile))


def upper_mask(I: slice, J: slice, device: Any = None) -> torch.Tensor | None:
    """The mask of the pairs i < j inside tile (I, J); None when the tile lies wholly above the diagonal.
    >>> upper_mask(slice(0, 2), slice(0, 2)).tolist()
    [[False, True], [False, False]]
    """
    if J.start >= I.stop:
        return None
    rows = torch.arange(I.start, I.stop, device=device)[:, None]
    cols = torch.arange(J.start, J.stop, device=device)[None, :]
    return rows < cols
