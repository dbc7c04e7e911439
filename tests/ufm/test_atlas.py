"""The theory atlas (python -m ufm.atlas): every row reproduces its theorem with the run users would make, and
the command line reports it (exit 0 when all are reproduced, 2 on an unknown row)."""

import math

import pytest

from ufm.atlas import ROWS, atlas, main


def test_every_row_is_reproduced():
    rows = atlas()
    assert [r["name"] for r in rows] == [r.name for r in ROWS] and len(rows) >= 13
    for r in rows:
        assert r["verdict"] == "reproduced", r
        assert math.isfinite(r["measured"]) and r["gap"] <= r["rtol"], r


def test_the_command_line(capsys):
    assert main(["focal_etf", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| name | paper |") and "| focal_etf |" in out and "reproduced" in out
    with pytest.raises(SystemExit) as e:
        main(["no_such_theorem"])
    assert e.value.code == 2
