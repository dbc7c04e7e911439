"""analysis.blocked: the memory budget, blocks of rows and tiles of pairs."""

import os
import subprocess
import sys

import pytest
import torch

from analysis.blocked import (
    DEFAULT_CAP,
    block_rows,
    budget,
    logit_blocks,
    memory_budget,
    pair_tiles,
    parse_bytes,
    row_blocks,
    set_memory_budget,
    tile_size,
)


@pytest.mark.parametrize("text,value", [("512MiB", 512 * 2**20), ("2GB", 2 * 10**9), ("1.5g", 1.5e9), ("1e9", 10**9),
                                        (4096, 4096), ("64 KiB", 65536)])
def test_sizes_are_parsed(text, value):
    assert parse_bytes(text) == int(value)


@pytest.mark.parametrize("bad", ["lots", "12 parsecs", "-5MB", 12, "0", True, "nan"])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="memory"):
        parse_bytes(bad)


def test_budget_is_set_scoped_and_read_from_the_environment():
    assert memory_budget() <= DEFAULT_CAP["cpu"]
    with budget("1MiB"):
        assert memory_budget() == 2**20
        with budget(8192):
            assert memory_budget() == 8192
        assert memory_budget() == 2**20
    set_memory_budget("3MB")
    try:
        assert memory_budget() == 3 * 10**6
    finally:
        set_memory_budget(None)
    env = {**os.environ, "UFM_MEMORY_BUDGET": "5MiB"}
    out = subprocess.run([sys.executable, "-c", "from analysis.blocked import memory_budget; print(memory_budget())"],
                         env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == 5 * 2**20


def test_block_rows_fill_the_budget_and_cover_the_rows():
    assert block_rows(100, itemsize=8, copies=3, nbytes=2400 * 7) == 7
    assert block_rows(10**9, nbytes=4096) == 1  # at least one row, however wide
    slices = list(row_blocks(23, 7))
    assert [(s.start, s.stop) for s in slices] == [(0, 7), (7, 14), (14, 21), (21, 23)]


def test_logit_blocks_equal_the_whole_product():
    g = torch.Generator().manual_seed(0)
    X, W, b = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((37, 5), (11, 5), (11,)))
    with budget(4096):  # 4096 / (11 · 8) = 46 rows: one block; copies=4 makes it 11 rows
        parts = list(logit_blocks(X, W, b, copies=4))
    assert len(parts) == 4 and [s.start for s, _ in parts] == [0, 11, 22, 33]
    assert torch.equal(torch.cat([z for _, z in parts]), torch.cat([X[s] @ W.T + b for s, _ in parts]))
    assert torch.allclose(torch.cat([z for _, z in parts]), X @ W.T + b, rtol=0, atol=1e-14)


def test_pair_tiles_cover_each_pair_once():
    for K, tile in ((1, 1), (7, 3), (10, 10), (9, 2)):
        seen = torch.zeros(K, K, dtype=torch.int64)
        for I, J in pair_tiles(K, tile):
            seen[I, J] += 1
        assert torch.equal(torch.triu(seen), torch.triu(torch.ones(K, K, dtype=torch.int64)))
    assert tile_size(10_000, itemsize=8, copies=2, nbytes=8 * 2 * 50 * 50) == 50
    assert tile_size(30, nbytes=10**9) == 30
