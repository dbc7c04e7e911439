"""The theory atlas (python -m ufm.atlas): every row reproduces its theorem with the run users would make, the
command line reports it (exit 0 when all are reproduced, 2 on an unknown row), --smoke runs one row per family,
and the site's atlas table (docs/atlas.md) is the atlas's own output."""

import math
import re
from pathlib import Path

import pytest

from ufm.atlas import README_END, README_START, ROWS, atlas, main, update_readme
from ufm.atlas import table as table_of

ATLAS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "atlas.md"


@pytest.fixture(scope="module")
def rows():
    return atlas()


def test_every_row_is_reproduced(rows):
    assert [r["name"] for r in rows] == [r.name for r in ROWS] and len(rows) >= 22
    for r in rows:
        assert r["verdict"] == "reproduced", r
        assert math.isfinite(r["measured"]) and r["gap"] <= r["rtol"], r


def test_the_command_line(capsys):
    assert main(["focal_etf", "--markdown", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| name | paper |") and "| focal_etf |" in out and "reproduced" in out
    with pytest.raises(SystemExit) as e:
        main(["no_such_theorem"])
    assert e.value.code == 2


def test_smoke_runs_one_row_per_family(capsys, monkeypatch, rows):
    """--smoke selects one row per family (the measurement itself is the full atlas's, reused here)."""
    import ufm.atlas

    measured = {r["name"]: r for r in rows}
    monkeypatch.setattr(ufm.atlas, "measure_row", lambda row: measured[row.name])
    assert main(["--smoke", "--no-progress"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == [r.name for r in ROWS if r.smoke] and 4 <= len(names) < len(ROWS) / 2


def test_the_atlas_page_table_is_the_atlas(rows, tmp_path):
    """docs/atlas.md's rows, papers, quantities and predictions are those of the atlas (measured values and gaps
    vary in the last digits between machines); --readme rewrites only the text between the markers."""
    text = ATLAS_PAGE.read_text()
    table = text.split(README_START, 1)[1].split(README_END, 1)[0].strip().splitlines()[2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    fresh = [[c.strip() for c in line.strip("|").split("|")] for line in table_of(rows, True).splitlines()[2:]]
    assert [c[:4] for c in cells] == [c[:4] for c in fresh]
    assert all(c[-1] == "reproduced" for c in cells)
    copy = tmp_path / "README.md"
    copy.write_text("head\n" + README_START + "\nold\n" + README_END + "\ntail\n")
    update_readme(copy, rows[:2])
    got = copy.read_text()
    assert got.startswith("head\n" + README_START + "\n| name |") and got.endswith(README_END + "\ntail\n")
    assert "old" not in got and len(re.findall(r"^\| ", got, re.M)) == 2 + 2
