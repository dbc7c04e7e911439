import json
import math

from ufm.output.rundir import atomic_write_text, new_run_dir, write_csv, write_json


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_json_writes_nonfinite_as_null(tmp_path):
    write_json(tmp_path / "s.json", {"a": math.nan, "b": [math.inf, 1.0]})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": None, "b": [None, 1.0]}


def test_csv_union_of_columns(tmp_path):
    write_csv(tmp_path / "h.csv", [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5, "extra": 2}])
    assert (tmp_path / "h.csv").read_text().splitlines() == ["step,loss,extra", "0,1.0,", "1,0.5,2"]


def test_new_run_dirs_are_distinct(tmp_path):
    a, b = new_run_dir(tmp_path, "x"), new_run_dir(tmp_path, "x")
    assert a != b and a.is_dir() and b.is_dir()
